"""The ``carehub`` command line."""
