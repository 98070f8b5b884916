"""Course content models (lessons, scenarios, exercises) and the loader that validates them.

Content files are YAML, versioned with ``format_version`` and validated by pydantic models with
``extra="forbid"``. A broken file is reported as ``path:line: what is wrong``, never a traceback.
"""
