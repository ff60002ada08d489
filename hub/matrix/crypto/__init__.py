"""End-to-bridge encryption: the hub's bot device in encrypted portal rooms (appservice
mode: the device is created with the as_token (MSC4190), to-device messages, one-time key
counts and device list changes arrive in the homeserver's transactions (MSC2409, MSC3202);
nio's Olm machine on vodozemac does the cryptography, its state lives in the hub's database).
"""
