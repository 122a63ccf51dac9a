"""What ingress and consumers share: the Kafka record contract, config loading, errors.

Neither side imports the other; both import this package. Keep it small.
"""

from importlib import metadata


def package_version() -> str:
    """The installed distribution's version (``0+unknown`` from a bare source tree)."""
    try:
        return metadata.version("webhook-gateway")
    except metadata.PackageNotFoundError:
        return "0+unknown"
