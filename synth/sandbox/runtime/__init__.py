"""Files that run INSIDE the sandbox (bound read-only into it): the session worker and a sitecustomize hook.

They import nothing from `synth` — the sandboxed interpreter cannot see the host's source tree.
"""
