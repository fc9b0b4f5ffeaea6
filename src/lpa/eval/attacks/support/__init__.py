"""Helpers shared by attacks (the attacker LLM, white-box utilities, text utilities); no attack lives here."""
