"""The installed package version, from a leaf module so that no module imports the package root for it."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("mechscope")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"
