from django.urls import path

from uploads.api import UploadDetailApi, UploadListCreateApi

urlpatterns = [
    path("uploads/", UploadListCreateApi.as_view(), name="upload-list"),
    path("uploads/<str:upload_id>/", UploadDetailApi.as_view(), name="upload-detail"),
]
