"""The app's logic: settings, credentials, tokens, the APIM client, errors and telemetry.

`function_app.py` holds only the triggers; each calls one function of `shared.handlers`.
"""
