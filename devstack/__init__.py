"""Local, protocol-faithful stand-ins for the Azure services the function app uses.

Development tooling only: `.funcignore` keeps this package out of the deployed app.
Run it with `python -m devstack up` (see the README).
"""

from devstack.stack import DevStack

__all__ = ["DevStack"]
