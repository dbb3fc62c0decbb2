"""NeuroNova's shared library: settings, tokens, DICOM demo data and the platform stack.

Notebook kernels, dashboards, services and Dask workers all import this package,
so importing it must stay cheap: heavy modules (numpy, pydicom, nilearn) are
imported by the submodules that need them, never here.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `neuronova_lib.connect()` without importing requests and dicomweb-client up front.
    if name in ("connect", "connect_signed"):
        from .dicomweb import session

        return getattr(session, name)
    if name == "view":  # the notebook viewer (ipyniivue), imported on first use
        from .viewer import view

        return view
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
