"""NVIDIA Triton: the model repository Bulwark builds, its Python-backend model, and a client wrapper.

Note: this package is `bulwark.triton`; a top-level folder named `triton/` where Python starts would shadow
the real `triton` package and break torch, which is why it lives inside `bulwark`.
"""
