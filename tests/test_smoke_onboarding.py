import pytest

from tests.fixtures import image_bytes, media_file

pytestmark = pytest.mark.django_db(transaction=True)


def test_onboarded_authorizer_uploads_png_through_the_task(api_client, authorizer, component):
    response = api_client.post(
        "/api/v1/uploads/",
        {"media": media_file(image_bytes("PNG"), "x.png"), "authorizer_appid": authorizer.appid},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    from uploads.services.process import upload_process

    outcome = upload_process(upload_id=response.json()["id"])
    assert outcome.status == "succeeded"
    detail = api_client.get(f"/api/v1/uploads/{response.json()['id']}/").json()
    assert detail["url"].startswith("http://mmbiz.qpic.cn/")
    assert detail["permission_check"]["passed"] is True
    seen = component.uploads()
    assert seen[-1]["part_name"] == "media"
