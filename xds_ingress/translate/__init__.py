"""Kubernetes objects (a StoreView) → IR, with a condition for every user mistake.

This package reads plain dicts only: it must not import protobuf or the
Kubernetes client, so it stays fast to test and free of Envoy types.
"""

from xds_ingress.translate.certificates import CertificateCache
from xds_ingress.translate.settings import ListenerSettings
from xds_ingress.translate.translator import translate

__all__ = ["CertificateCache", "ListenerSettings", "translate"]
