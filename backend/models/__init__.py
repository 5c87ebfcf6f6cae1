"""The networks: the SCAIL-2 transformer, its rotary embedding, the frozen encoders, the tiny profile.

Modules here build and run models; reading checkpoint files is `backend.loaders`' work.
Nothing is imported at package level, so `import backend.models.rope` stays light.
"""
