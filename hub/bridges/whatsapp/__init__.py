"""WhatsApp Cloud API channel: `mapping` (pure payload ↔ hub types), `markup` (Matrix HTML →
WhatsApp markup, pure), `errors` (the error table, pure), `client` (Graph API), `channel`
(WhatsappChannel: webhooks and sending) and `commands` (!template, !templates).

Kept free of imports so the pure modules can be used without the I/O ones.
"""
