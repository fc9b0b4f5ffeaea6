"""Helpers shared by judges (prompts, features, gold labels, validation); no judge lives here."""
