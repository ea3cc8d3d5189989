from django.apps import AppConfig


class SaasConfig(AppConfig):
    name = "saas"
    verbose_name = "The SaaS that bills with the billing engine"
