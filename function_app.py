"""The Functions app: builds the FunctionApp and registers the blueprints — nothing else.

Importing this module reads no setting, opens no connection and builds no client (tests/test_function_app.py).
"""

import azure.functions as func

from functions.email_poller import bp as email_poller_bp
from functions.ops import bp as ops_bp
from functions.transcription import bp as transcription_bp
from functions.whatsapp import bp as whatsapp_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(ops_bp)
app.register_functions(email_poller_bp)
app.register_functions(whatsapp_bp)
app.register_functions(transcription_bp)
