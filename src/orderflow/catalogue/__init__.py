"""The catalogue: products, their prices and stock levels, and the caches in front of them.

Public face: what other capabilities may use. Everything else in this package is its own.
"""

from orderflow.catalogue.price_cache import PriceCache
from orderflow.catalogue.products import ProductCache
from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.catalogue.store import get_many as products_by_id

__all__ = ["PriceCache", "ProductCache", "RedisProductCache", "products_by_id"]
