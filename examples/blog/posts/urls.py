from django.urls import path

from . import views

urlpatterns = [
    path("posts/", views.post_list, name="post-list"),
    path("posts/<uuid:pk>/", views.post_detail, name="post-detail"),
    path("api/posts/", views.api_posts, name="api-posts"),
    path("api/posts/<uuid:pk>/", views.api_post, name="api-post"),
]
