"""riskalign: risk-aware and distributionally robust preference optimization."""

from riskalign.config import resolvers

resolvers.register()
