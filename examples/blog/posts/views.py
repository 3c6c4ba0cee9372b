from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from .forms import PostForm
from .models import Post


@login_required
@require_http_methods(["GET", "POST"])
def post_list(request: HttpRequest) -> HttpResponse:
    """The signed-in user's posts and a form to write one (POST: create, then redirect)."""
    form = PostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        post = form.save(commit=False)
        post.author = request.user
        post.save()
        return redirect("post-detail", pk=post.pk)
    posts = Post.objects.filter(author=request.user).select_related("author")
    return render(request, "posts/list.html", {"posts": posts, "form": form})


@login_required
@require_GET
def post_detail(request: HttpRequest, pk) -> HttpResponse:
    post = get_object_or_404(Post.objects.select_related("author"), pk=pk, author=request.user)
    cache.add(f"post-views:{post.pk}", 0)  # a view counter in Redis
    views = cache.incr(f"post-views:{post.pk}")
    return render(request, "posts/detail.html", {"post": post, "views": views})


@login_required
@require_GET
def api_posts(request: HttpRequest) -> JsonResponse:
    posts = Post.objects.filter(author=request.user).select_related("author")
    return JsonResponse({"count": len(posts), "results": [p.as_json() for p in posts]})


@login_required
@require_GET
def api_post(request: HttpRequest, pk) -> JsonResponse:
    post = Post.objects.select_related("author").filter(pk=pk, author=request.user).first()
    if post is None:
        return JsonResponse({"detail": "Not found."}, status=404)
    return JsonResponse(post.as_json())
