"""Built-in models (the shipped Hugging Face configs), registered as a plugin."""

from vidur.hookspecs import hookimpl
from vidur.model.catalog import builtin_models


@hookimpl
def vidur_register_models(register):
    """Register every shipped model spec, aliases included."""
    for spec in builtin_models():
        register(spec)
