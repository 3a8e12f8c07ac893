"""One module per notebook: its params section and the orchestration the notebook calls.

Every module here registers its ``params.yaml`` section(s) with :func:`histolib.config.section`.
"""
