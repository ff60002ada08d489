// An adviser in Element's own SDK: matrix-js-sdk with its Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm), for tests/e2e/test_element_sdk.py.
//
// Logs in as a NEW device, joins the portal room it is invited to, waits for the customer's
// message (decrypted), records the decryption error and shield of the ghost's events and of
// the bot's notices, sends an encrypted reply, asks the bot `!help` and waits for its answer.
//
// Input: one JSON object in argv[2] (see `cfg` below). Output: the SDK's logs go to stderr;
// stdout gets exactly one line, `RESULT {json}`, whatever happened (`ok: false` and `error`
// when something failed), so the Python side can tell what the SDK saw.

import { readFileSync } from "node:fs";
import process from "node:process";

// matrix-js-sdk logs through console.*: keep stdout for the result line only.
for (const level of ["log", "info", "debug", "trace", "warn"]) console[level] = console.error;

// matrix-js-sdk ≥ 38 asks for Node 22; on Node 20 the one thing it misses is
// Promise.withResolvers (ES2024, in every browser Element supports).
Promise.withResolvers ??= function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
    });
    return { promise, resolve, reject };
};

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { EventShieldColour, EventShieldReason } = cryptoApi;

const cfg = JSON.parse(process.argv[2]);
// cfg: { homeserver, user, password, deviceName, roomName, customerText, replyText,
//        markerText, botMxid, timeoutMs, isolation: "all" | "signed" }
logger.setLevel(cfg.debug ? "debug" : "warn");

const result = {
    ok: false,
    sdk: {},
    deviceId: null,
    crossSigningReady: null, // when cfg.crossSign
    roomId: null,
    customer: null, // the ghost's message: decryption error, shield, wire sender_key/device_id
    ghostEvents: [], // every event of a ghost seen in the room
    botNotices: [], // every event of the bot seen in the room
    botDevice: null, // the bot device's verification status as the SDK sees it
    botUser: null,
    reply: null,
    help: null,
    marker: null,
    undecryptable: [],
    roomAtFailure: [],
    error: null,
    steps: [],
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = Date.now() + cfg.timeoutMs;
function step(name) {
    result.steps.push(`${((Date.now() - started) / 1000).toFixed(1)}s ${name}`);
}
const started = Date.now();

async function waitFor(what, fn, ms = deadline - Date.now()) {
    const until = Math.min(deadline, Date.now() + ms);
    for (;;) {
        const got = await fn();
        if (got) return got;
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
        await sleep(100);
    }
}

const colourName = (c) => (c === null || c === undefined ? null : EventShieldColour[c]);
const reasonName = (r) => (r === null || r === undefined ? null : EventShieldReason[r]);

async function describe(client, ev) {
    const info = ev.isDecryptionFailure()
        ? null
        : await client.getCrypto().getEncryptionInfoForEvent(ev);
    const wire = ev.getWireContent();
    return {
        eventId: ev.getId(),
        sender: ev.getSender(),
        type: ev.getType(),
        msgtype: ev.getContent().msgtype ?? null,
        body: ev.getContent().body ?? null,
        encrypted: ev.isEncrypted(),
        decryptionFailure: ev.isDecryptionFailure(),
        decryptionFailureReason: ev.decryptionFailureReason ?? null,
        // The SDK's own words for a failure (the Rust crypto's error text).
        decryptionError: ev.isDecryptionFailure() ? String(ev.getContent().body ?? "") : null,
        wireDeviceId: wire.device_id ?? null,
        wireSenderKey: wire.sender_key ?? null,
        senderKey: ev.getSenderKey(),
        shieldColour: info ? colourName(info.shieldColour) : null,
        shieldReason: info ? reasonName(info.shieldReason) : null,
    };
}

// Decrypted events of the room (or undecryptable ones), oldest first.
function timeline(room) {
    return room.getLiveTimeline().getEvents();
}

let client = null;
try {
    const pkg = (name) =>
        JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, import.meta.url)))
            .version;
    result.sdk = {
        "matrix-js-sdk": pkg("matrix-js-sdk"),
        "@matrix-org/matrix-sdk-crypto-wasm": pkg("@matrix-org/matrix-sdk-crypto-wasm"),
        node: process.version,
    };

    // --- log in: a new device -------------------------------------------------------------
    const anon = sdk.createClient({ baseUrl: cfg.homeserver });
    const login = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: cfg.user },
        password: cfg.password,
        initial_device_display_name: cfg.deviceName,
    });
    result.deviceId = login.device_id;
    client = sdk.createClient({
        baseUrl: cfg.homeserver,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const crypto = client.getCrypto();
    result.sdk.rustCrypto = crypto.getVersion();
    step("logged in");
    if (cfg.crossSign) {
        // What Element does at a first login: set up cross-signing (here: new keys, uploaded
        // with the password), so this device is signed by its owner.
        await crypto.bootstrapCrossSigning({
            setupNewCrossSigning: true,
            authUploadDeviceSigningKeys: (makeRequest) =>
                makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: cfg.user },
                    password: cfg.password,
                }),
        });
        result.crossSigningReady = await crypto.isCrossSigningReady();
        step("cross-signing set up");
    }
    if (cfg.isolation === "signed") {
        // Element's "exclude insecure devices" (MSC4153): only cross-signed senders.
        crypto.setDeviceIsolationMode(new cryptoApi.OnlySignedDevicesIsolationMode());
    }
    await client.startClient({ initialSyncLimit: 30 });
    await waitFor("first sync", () => client.isInitialSyncComplete());
    step("synced");

    // --- the invite, the join ------------------------------------------------------------
    const invited = await waitFor(`an invite to "${cfg.roomName}"`, () =>
        client
            .getRooms()
            .find((r) => r.name === cfg.roomName && ["invite", "join"].includes(r.getMyMembership())),
    );
    result.roomId = invited.roomId;
    if (invited.getMyMembership() === "invite") await client.joinRoom(invited.roomId);
    const room = await waitFor("the joined room", () => {
        const r = client.getRoom(result.roomId);
        return r && r.getMyMembership() === "join" ? r : null;
    });
    await waitFor("the room to be encrypted", () => crypto.isEncryptionEnabledInRoom(room.roomId));
    // The SDK encrypts for the members it knows: sending before the join's sync brought them
    // would share the room key with nobody (the hub then cannot read the message).
    await waitFor("the bot among the room's members", () =>
        room.getJoinedMembers().some((m) => m.userId === cfg.botMxid),
    );
    step("joined");

    // --- the customer's message ----------------------------------------------------------
    // Decrypted with the text sent, or refused for good: a decryption failure that waiting
    // for a room key cannot mend (the SDK's trust rules), from the customer's ghost (in a
    // new portal: anyone but the bot and this user).
    // (Until the hub has shared the key, which it does when this user joins, the SDK says
    // "sent before this device logged in" or "unknown session": those mend.)
    const waiting = new Set([
        "MEGOLM_UNKNOWN_INBOUND_SESSION_ID",
        "OLM_UNKNOWN_MESSAGE_INDEX",
        "HISTORICAL_MESSAGE_NO_KEY_BACKUP",
        "HISTORICAL_MESSAGE_BACKUP_UNCONFIGURED",
        "HISTORICAL_MESSAGE_WORKING_BACKUP",
        "HISTORICAL_MESSAGE_USER_NOT_JOINED",
    ]);
    const fromGhost = (e) => e.getSender() !== cfg.botMxid && e.getSender() !== client.getUserId();
    let scrolled = false;
    const customerEvent = await waitFor("the customer's message (decrypted)", async () => {
        const found = timeline(room).find(
            (e) =>
                fromGhost(e) &&
                ((e.getType() === "m.room.message" && e.getContent().body === cfg.customerText) ||
                    (e.isDecryptionFailure() && !waiting.has(e.decryptionFailureReason))),
        );
        if (found) return found;
        if (!scrolled && room.getLiveTimeline().getPaginationToken("b")) {
            scrolled = true; // the sync may have left it out: scroll back once
            await client.scrollback(room, 30);
        }
        return null;
    });
    result.customer = await describe(client, customerEvent);
    step(customerEvent.isDecryptionFailure() ? "customer message refused" : "customer message decrypted");

    // The bot's device as the SDK sees it (keys, cross-signing).
    const botStatus = await crypto.getDeviceVerificationStatus(cfg.botMxid, cfg.botDevice);
    result.botDevice = botStatus && {
        signedByOwner: botStatus.signedByOwner,
        crossSigningVerified: botStatus.crossSigningVerified,
        localVerified: botStatus.localVerified,
        isVerified: botStatus.isVerified(),
    };
    const botUser = await crypto.getUserVerificationStatus(cfg.botMxid);
    result.botUser = {
        isVerified: botUser.isVerified(),
        isCrossSigningVerified: botUser.isCrossSigningVerified(),
        wasCrossSigningVerified: botUser.wasCrossSigningVerified(),
    };

    // --- the reply -----------------------------------------------------------------------
    const sent = await client.sendTextMessage(room.roomId, cfg.replyText);
    result.reply = { eventId: sent.event_id };
    step("reply sent");

    // --- !help ---------------------------------------------------------------------------
    const help = await client.sendTextMessage(room.roomId, "!help");
    const answer = await waitFor("the bot's answer to !help", () =>
        timeline(room).find(
            (e) =>
                e.getSender() === cfg.botMxid &&
                e.getType() === "m.room.message" &&
                e.getContent()["m.relates_to"]?.["m.in_reply_to"]?.event_id === help.event_id,
        ),
    );
    result.help = { commandEventId: help.event_id, answer: await describe(client, answer) };
    step("!help answered");

    // The events this client sent travelled encrypted (seen from the server).
    const raw = await client.fetchRoomEvent(room.roomId, sent.event_id);
    result.reply.wireType = raw.type;

    // A marker after everything: when the customer has it, whatever the hub would send for
    // the reply has been sent (a conversation is sent in order).
    const marker = await client.sendTextMessage(room.roomId, cfg.markerText);
    result.marker = { eventId: marker.event_id };
    step("marker sent");

    // --- everything seen from the ghosts and the bot -------------------------------------
    for (const ev of timeline(room)) {
        if (ev.isState()) continue;
        if (ev.isDecryptionFailure()) {
            result.undecryptable.push(await describe(client, ev));
            continue;
        }
        if (ev.getSender() === cfg.botMxid) result.botNotices.push(await describe(client, ev));
        else if (ev.getSender() !== client.getUserId())
            result.ghostEvents.push(await describe(client, ev));
    }
    result.ok = true;
} catch (err) {
    result.error = String(err?.stack ?? err);
    // What the room held when it failed.
    try {
        const room = client && result.roomId ? client.getRoom(result.roomId) : null;
        for (const ev of room ? timeline(room) : []) {
            if (!ev.isState()) result.roomAtFailure.push(await describe(client, ev));
        }
    } catch (inner) {
        result.error += `\n(while describing the room: ${inner})`;
    }
} finally {
    result.elapsedMs = Date.now() - started;
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
    try {
        client?.stopClient();
    } catch {
        // nothing to do: the process ends
    }
    process.exit(result.ok ? 0 : 1);
}
