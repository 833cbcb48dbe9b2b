from reliability._common import folder  # noqa: F401  (the fixture)
