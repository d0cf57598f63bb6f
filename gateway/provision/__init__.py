"""Provisioning a hub: identity and config, enrollment, pairing the kit, doctors' thresholds, the installation test,
the health check, and the installer's local web page.

Modules: :mod:`~gateway.provision.files` (layout, atomic writes, step state), :mod:`~gateway.provision.document`
(the config as an edited, validated document), :mod:`~gateway.provision.steps`, :mod:`~gateway.provision.radio`
(scan and pair over bleak), :mod:`~gateway.provision.testrun` (installation test and signed report),
:mod:`~gateway.provision.doctor`, :mod:`~gateway.provision.pin` and :mod:`~gateway.provision.web`. Every error is a
:class:`~gateway.provision.errors.ProvisionError` that says what happened and what to do.
"""
