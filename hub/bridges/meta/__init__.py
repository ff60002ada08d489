"""Facebook Messenger and Instagram (Meta webhooks + the Graph API Send API): one
implementation, two channels (`MessengerChannel`, `InstagramChannel` in `channel`)."""
