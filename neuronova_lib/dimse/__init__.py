"""DICOM networking (DIMSE): the platform's own listener for modalities.

* :mod:`.listener` — the storage SCP: known modalities only, every instance
  through the ingest gate, one audit record per C-STORE;
* :mod:`.modalities` — who may associate (AE title and host);
* :mod:`.status` — C-STORE statuses for the gate's reasons;
* :mod:`.probe` — the C-ECHO the supervisor's health check sends.

Run: ``python -m neuronova_lib.dimse`` (started by ``neuronova up`` when
``NEURONOVA_DICOM_ENABLED`` is set).
"""
