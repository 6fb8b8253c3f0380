"""Azure Functions app (Python v2 model): call an API behind APIM with a managed identity.

The triggers are a blueprint from `shared/` (a proxy, health and a timer per API
connection); this file only registers them. Nothing at import time touches the
network or reads settings, so a bad setting never hides the functions from the
host: the health function reports it and calls fail with its name.
"""

import azure.functions as func

from shared import blueprint

app = func.FunctionApp()
# The default connection (APIM_BASE_URL, …): /api/apim/{*path}, /api/apim-health and a timer.
app.register_functions(blueprint())
# Another API, with settings INVENTORY_APIM_BASE_URL, …: /api/apim-inventory/{*path}, …
# app.register_functions(blueprint("inventory"))
