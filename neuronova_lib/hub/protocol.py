"""Names shared by the hub side and the API side of the kernel-token exchange (RFC 8693).

Kept free of JupyterHub imports: the API imports it too.
"""

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: RFC 8693 lets a deployment name its own token types: a JupyterHub API token.
HUB_TOKEN_TYPE = "urn:neuronova:params:oauth:token-type:jupyterhub"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: Platform roles that may sign in to the hub, have a server and get a kernel token.
NOTEBOOK_ROLES = ("scientist", "model_owner", "admin")
#: The hub-managed service that trades a kernel's hub token for a platform token.
TOKEN_SERVICE = "neuronova-token"
