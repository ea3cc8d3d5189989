from django.urls import path
from saas import views
from saas.webhooks import gateway_notification

urlpatterns = [
    path("customers", views.create_customer),
    path("customers/<str:customer_id>/payment-methods", views.add_payment_method),
    path("customers/<str:customer_id>/subscriptions", views.customer_subscriptions),
    path("customers/<str:customer_id>/invoices", views.customer_invoices),
    path("plans", views.list_plans),
    path("subscriptions", views.subscribe),
    path("subscriptions/<str:subscription_id>/change-plan", views.change_plan),
    path("subscriptions/<str:subscription_id>/cancel", views.cancel),
    path("welcome-emails", views.welcome_emails),
    path("billing/notifications/<str:gateway>", gateway_notification),
]
