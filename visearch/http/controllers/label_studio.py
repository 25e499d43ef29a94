"""``POST /v1/collections/{id}/label-studio``: a collection's images as Label Studio tasks."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from msgspec import Meta, Struct

from visearch.http.deps import DB, AppSettings
from visearch.http.errors import error_response, error_responses
from visearch.http.schemas import CollectionId, ErrorBody, Id
from visearch.integrations.base import ToolError


class SendToLabelStudioBody(Struct, forbid_unknown_fields=True):
    project: Annotated[Id, Meta(description="Label Studio project id")]


class SendToLabelStudioResponse(Struct):
    project: int
    tasks_created: int
    task_ids: list[int]
    predictions: Annotated[int, Meta(description="visearch boxes sent as pre-annotations")]
    boxes_left_out: Annotated[int, Meta(description="boxes whose concept is not a label of the project")]
    linked: Annotated[bool, Meta(description="the project is synced back into visearch (its tables are in this database)")]


def _tool_error(request: Request, exc: ToolError) -> Response[ErrorBody]:
    return error_response(502, "annotation_tool_error", str(exc))


_RESPONSES = {
    **error_responses(400, 401, 404, 422),
    502: ResponseSpec(data_container=ErrorBody, generate_examples=False,
                      description="Label Studio could not be reached or refused the request"),
}


class LabelStudioController(Controller):
    path = "/v1/collections"
    tags = ["collections"]
    exception_handlers = {ToolError: _tool_error}

    @post("/{collection_id:int}/label-studio", sync_to_thread=True, status_code=200,
          summary="Send a collection's images to Label Studio", responses=_RESPONSES)
    def send_to_label_studio(self, request: Request, db: DB, settings: AppSettings, collection_id: CollectionId,
                             data: JSONBody[SendToLabelStudioBody]) -> SendToLabelStudioResponse:
        """Each image of the collection becomes a task in the Label Studio project (its REST API
        at VISEARCH_LABEL_STUDIO_URL, with VISEARCH_LABEL_STUDIO_TOKEN), with visearch's boxes as
        predictions (images mode: every box of the image; objects mode: the collection's
        boxes; only concepts that are labels of the project). The tasks carry their visearch
        image id: when Label Studio's tables are in this database the project is linked, and
        annotations made on the tasks come back onto these images. 502 when Label Studio cannot
        be reached or refuses the tasks."""
        from visearch.integrations.label_studio import LabelStudio
        from visearch.integrations.send import send_collection

        report, linked = send_collection(db, LabelStudio(), settings, request.user, collection_id, data.project)
        return SendToLabelStudioResponse(
            project=report.project_id, tasks_created=report.tasks_created, task_ids=report.task_ids,
            predictions=report.predictions, boxes_left_out=report.boxes_left_out, linked=linked)
