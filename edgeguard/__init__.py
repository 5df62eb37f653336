"""edgeguard's shared package.

faas-cli copies this folder into every function's build context (stack.yml
``configuration.copy``), where it is imported as ``function.edgeguard``; in the
repository it is the top-level ``edgeguard``. Modules inside therefore import
each other relatively only.
"""
