"""Alert webhooks: formats, routing, delivery."""
