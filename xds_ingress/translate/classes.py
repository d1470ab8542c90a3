"""Which Ingresses belong to this controller."""

from __future__ import annotations

from dataclasses import dataclass

from xds_ingress.sources.objects import INGRESS_CLASS, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.settings import ListenerSettings

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassPolicy:
    our_classes: frozenset[str]
    legacy_class: str
    claim_classless: bool

    @classmethod
    def build(cls, view: StoreView, *, settings: ListenerSettings) -> ClassPolicy:
        ours = [
            ingress_class
            for ingress_class in view.objects(INGRESS_CLASS)
            if fields.mapping(ingress_class.body.get("spec")).get("controller")
            == settings.controller_name
        ]
        has_default = any(
            ingress_class.annotations.get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true"
            for ingress_class in ours
        )
        return cls(
            our_classes=frozenset(ingress_class.name for ingress_class in ours),
            legacy_class=settings.ingress_class,
            claim_classless=settings.claim_classless or has_default,
        )

    def claims(self, ingress: KubeObject) -> bool:
        class_name = fields.mapping(ingress.body.get("spec")).get("ingressClassName")
        if class_name is not None:
            return isinstance(class_name, str) and class_name in self.our_classes
        legacy = ingress.annotation(CLASS_ANNOTATION)
        if legacy is not None:
            return legacy == self.legacy_class
        return self.claim_classless
