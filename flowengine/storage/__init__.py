"""File storage: buckets of files on local disk or in an S3-compatible object store.

``service`` holds what callers use (``Storage``, ``Bucket``, ``open_storage``); ``safety``
the checks every upload passes; ``local`` and ``s3`` the two backends behind one interface
(``backend``). Import names from the module that defines them.
"""
