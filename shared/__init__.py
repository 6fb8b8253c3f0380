"""Call APIs behind APIM with a managed identity, from any Azure Functions app (Python v2 model).

    app.register_functions(blueprint())             # proxy, health and timer for APIM_BASE_URL, …
    response = await api("inventory").call("GET", "/items")   # from your own functions

The folder can be copied under any name: its modules import each other relatively,
and its logger is the package's own name.
"""

from .apim import ApimResponse
from .blueprint import blueprint
from .connection import ApiConnection, api
from .errors import AppError, ConfigurationError

__all__ = ["ApiConnection", "ApimResponse", "AppError", "ConfigurationError", "api", "blueprint"]
