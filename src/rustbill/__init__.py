"""RustBill IntegrationService: the plugin system and integration core of RustBill."""

__version__ = "0.1.0"
