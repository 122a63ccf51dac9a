"""Built-in sample webhook bodies for ``python -m gateway send --example NAME``.

They are shaped like Crystallize's webhook payloads: the result of the GraphQL query
configured on the webhook, ``{"<entity>": {"get": {...}}}``, so the gateway's default
Crystallize key rules find the entity id (``/order/get/id``, ``/item/get/id``,
``/customer/get/identifier``). ``order`` is the example order of Crystallize's webhook
documentation, field for field; ``pipeline`` is the same order after it moved to a new
stage of an order pipeline (Crystallize's flows for orders), so both land on one Kafka
key and are consumed in order.

Bodies are serialised the way JavaScript's ``JSON.stringify`` does (no spaces, UTF-8,
non-ASCII left as is), which is what Crystallize sends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

_ORDER_ID: Final = "68e4fe1da9733a66efd88673"

_CUSTOMER: Final[dict[str, Any]] = {
    "identifier": "bard@crystallize.com",
    "firstName": "Bård",
    "lastName": "Farstad",
}

_CART: Final[list[dict[str, Any]]] = [
    {
        "name": "In Utero",
        "sku": "4958411",
        "quantity": 1,
        "price": {"currency": "EUR", "gross": 35, "net": 28},
    },
    {
        "name": "The Best Of The Doors",
        "sku": "3795082",
        "quantity": 1,
        "price": {"currency": "EUR", "gross": 10.1125, "net": 8.09},
    },
]

_TOTAL: Final[dict[str, Any]] = {"currency": "EUR", "gross": 45.1125, "net": 36.09}

EXAMPLES: Final[Mapping[str, tuple[str, dict[str, Any]]]] = {
    "order": (
        "an order created in the tenant (Crystallize's documented example)",
        {
            "order": {
                "get": {
                    "id": _ORDER_ID,
                    "createdAt": "2025-10-07T11:48:45.000Z",
                    "updatedAt": "2025-10-07T11:48:45.000Z",
                    "customer": _CUSTOMER,
                    "cart": _CART,
                    "total": _TOTAL,
                    "pipelines": None,
                }
            }
        },
    ),
    "item": (
        "a product published in the catalogue",
        {
            "item": {
                "get": {
                    "id": "6717c2c0f1d6a4b1d2e3f405",
                    "name": "In Utero",
                    "type": "product",
                    "language": "en",
                    "path": "/shop/music/in-utero",
                    "createdAt": "2025-09-30T08:12:03.000Z",
                    "updatedAt": "2025-10-07T10:02:11.000Z",
                    "topics": [{"id": "6717c2c0f1d6a4b1d2e3f4aa", "name": "Grunge"}],
                    "variants": [
                        {
                            "sku": "4958411",
                            "name": "In Utero (vinyl)",
                            "isDefault": True,
                            "stock": 12,
                            "priceVariants": [
                                {"identifier": "default", "currency": "EUR", "price": 35}
                            ],
                        }
                    ],
                }
            }
        },
    ),
    "customer": (
        "a customer registered or updated",
        {
            "customer": {
                "get": {
                    **_CUSTOMER,
                    "email": "bard@crystallize.com",
                    "phone": None,
                    "companyName": "Crystallize",
                    "createdAt": "2025-10-07T11:40:02.000Z",
                    "addresses": [
                        {
                            "type": "billing",
                            "street": "Karl Johans gate 1",
                            "postalCode": "0154",
                            "city": "Oslo",
                            "country": "Norway",
                        }
                    ],
                }
            }
        },
    ),
    "pipeline": (
        "the order moved to another stage of an order pipeline (flow)",
        {
            "order": {
                "get": {
                    "id": _ORDER_ID,
                    "createdAt": "2025-10-07T11:48:45.000Z",
                    "updatedAt": "2025-10-07T12:05:17.000Z",
                    "customer": _CUSTOMER,
                    "total": _TOTAL,
                    "pipelines": [
                        {
                            "pipeline": {
                                "id": "66f2a1e0b3c4d5e6f7a8b9c0",
                                "name": "Fulfilment",
                            },
                            "stageId": "66f2a1e0b3c4d5e6f7a8b9c3",
                            "stage": "packed",
                        }
                    ],
                }
            }
        },
    ),
}


def names() -> list[str]:
    return list(EXAMPLES)


def body(name: str) -> bytes:
    """The example ``name`` as Crystallize would send it; ``KeyError`` if unknown."""
    _, document = EXAMPLES[name]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
