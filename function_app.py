"""The Functions app: builds the FunctionApp and registers the blueprints — nothing else.

Importing this module reads no setting, opens no connection and builds no client (tests/test_function_app.py).
"""

import azure.functions as func

from functions.ops import bp as ops_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(ops_bp)
