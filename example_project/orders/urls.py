from django.urls import path

from orders import views

urlpatterns = [
    path("", views.create_order, name="create-order"),
    path("<int:order_id>/", views.order_detail, name="order-detail"),
]
