"""riskalign: risk-aware and distributionally robust preference optimization."""

from riskalign import resolvers

resolvers.register()
