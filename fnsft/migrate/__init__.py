"""Recipe migration PEFT ⇄ full (``fnsft migrate-config``): the rules (:mod:`~fnsft.migrate.rules`, pure Recipe →
Recipe), GPU sizing with the estimator (:mod:`~fnsft.migrate.fit`) and files with comments kept (:mod:`~fnsft.migrate.files`).
"""
