"""The clinician dashboards (``dashboards/*.ipynb`` in Voilà): the server and the pages' logic.

The notebooks hold one call each; what they show is built here, so that it is tested
like any other code (:mod:`.worklist` for the data, :mod:`.pages` for the widgets).
"""
