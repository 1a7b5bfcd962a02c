"""Admin helpers the apps' operator screens share: how an admin page writes through a service
and shows the service's refusal on its form."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, router, transaction
from django.http import HttpRequest

from core.errors import ApplicationError

# The refusal of the first attempt at saving, while the form is shown again (see
# ServiceFormAdminMixin). Kept on the request: a ModelAdmin instance serves every request.
_REFUSAL = "_service_refusal"


class ServiceRefused(Exception):
    """A refusal by the service ``perform_save`` called, on its way out of the admin's save
    step to ``ServiceFormAdminMixin._changeform_view``."""

    def __init__(self, error: ApplicationError | ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


def _problems(problems: Any, code: str) -> list[ValidationError]:
    """One field's problems, ``[{"code", "message"}, ...]`` (or strings, or one of either), as
    errors with their codes (``code`` when a problem gives none)."""
    if not isinstance(problems, list | tuple):
        problems = [problems]
    found = []
    for problem in problems:
        if isinstance(problem, Mapping):
            message, problem_code = problem.get("message", ""), problem.get("code") or code
        else:
            message, problem_code = problem, code
        found.append(ValidationError(str(message), code=problem_code))
    return found


def refusal_errors(
    error: ApplicationError | ValidationError,
    field_names: Iterable[str] = (),
) -> dict[str, list[ValidationError]]:
    """A service's refusal as form errors, {field or NON_FIELD_ERRORS: [error, ...]}, each
    with its code.

    An ApplicationError gives its ``detail`` as the non-field error and each entry of its
    ``fields`` ({field: [{"code", "message"}]}) on that field. One naming no field is shown on
    ``field_names`` too (the fields it is about, chosen by the admin), with the generic
    message of its class. A Django ValidationError (a model's ``full_clean`` in the service)
    gives its errors per field."""
    if isinstance(error, ValidationError):
        if hasattr(error, "error_dict"):
            return {name: list(errors) for name, errors in error.error_dict.items()}
        return {NON_FIELD_ERRORS: list(error.error_list)}
    found = {NON_FIELD_ERRORS: [ValidationError(error.detail, code=error.code)]}
    per_field = {
        name: _problems(problems, error.code) for name, problems in error.fields.items()
    } or {
        name: [ValidationError(type(error).default_detail, code=error.code)] for name in field_names
    }
    for name, errors in per_field.items():
        found.setdefault(name, []).extend(errors)
    return found


def show_refusal(
    form: forms.BaseForm,
    error: ApplicationError | ValidationError,
    field_names: Iterable[str] = (),
) -> None:
    """Add a service's refusal to ``form`` as errors (``refusal_errors``), making it invalid.
    An error about a field the form does not have is shown above the form, after its name."""
    for name, errors in refusal_errors(error, field_names).items():
        for problem in errors:
            if name == NON_FIELD_ERRORS or name in form.fields:
                form.add_error(None if name == NON_FIELD_ERRORS else name, problem)
            else:
                form.add_error(
                    None, ValidationError(f"{name}: {problem.messages[0]}", code=problem.code)
                )


class ServiceFormAdminMixin:
    """For a ModelAdmin whose add and change forms write through a service.

    The contract:

    * The ModelAdmin implements ``perform_save(request, form, change)``: it calls the service
      with ``form.cleaned_data`` (and ``form.instance`` on a change) and returns the object the
      service saved. The admin goes on with that object (many-to-many fields and inlines,
      the history log, the redirect).
    * Forms only validate: their ``clean`` and ``_post_clean`` never write and need not repeat
      the service's checks, which the service makes again under its locks anyway.
    * Writing happens in the admin's save step. Django's ``changeform_view`` runs a POST in a
      transaction and calls ``save_model`` only once the form and the inlines are valid; this
      mixin's ``save_model`` calls ``perform_save`` there. Inlines and many-to-many fields
      are saved after it (``save_related``), in the same transaction.
    * A refusal by the service (an ``ApplicationError``, or a ``ValidationError`` from a
      model's ``full_clean``) becomes form errors: the ``detail`` above the form, each entry
      of ``fields`` ({field: [{"code", "message"}]}) on its field, with its code
      (``refusal_errors``). A refusal naming no field is also shown on the fields
      ``refusal_fields`` gives for its code: those of them the operator changed, or all of
      them when none was. The add or change form is shown again with them (status 200), and
      nothing of the attempt is kept.

    How: the POST's run of ``_changeform_view`` is wrapped in a savepoint, and ``save_model``
    raises a refusal as ``ServiceRefused``, which rolls the savepoint back (the service's
    writes, and anything saved before it). Django builds the page (form, inlines, media)
    inside ``_changeform_view``, so the view is then run a second time on the same POST, the
    refusal kept on the request: ``get_form`` gives a form class that adds it to its errors
    when validated. That form is invalid, so it is rendered and ``save_model`` is not called
    again; the second run only validates and reads.

    ``list_editable`` is not supported on these admins (the changelist would not show a
    refusal): give them none."""

    #: By error code: the form fields a refusal that names none is about.
    refusal_fields: Mapping[str, Sequence[str]] = {}

    def perform_save(self, request: HttpRequest, form: forms.ModelForm, change: bool):
        raise NotImplementedError(f"{type(self).__name__} must implement perform_save.")

    def save_model(self, request: HttpRequest, obj: models.Model, form, change: bool) -> None:
        try:
            saved = self.perform_save(request, form, change)
        except (ApplicationError, ValidationError) as exc:
            raise ServiceRefused(exc) from exc
        if saved is not None and saved is not obj:
            # The service may save another instance (one it locked and read): the admin
            # carries on with the form's instance, which becomes that saved object.
            obj.__dict__.update(saved.__dict__)

    def _refusal_fields_for(self, form: forms.BaseForm, error: Exception) -> list[str]:
        names = [
            name
            for name in self.refusal_fields.get(getattr(error, "code", ""), ())
            if name in form.fields
        ]
        changed = [name for name in names if name in form.changed_data]
        return changed or names

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        refusal = getattr(request, _REFUSAL, None)
        if refusal is None:
            return form_class
        admin = self

        class RefusedForm(form_class):
            def _post_clean(self) -> None:
                super()._post_clean()
                show_refusal(self, refusal, admin._refusal_fields_for(self, refusal))

        RefusedForm.__name__ = RefusedForm.__qualname__ = form_class.__name__
        return RefusedForm

    def _changeform_view(self, request: HttpRequest, object_id, form_url, extra_context):
        if request.method != "POST":
            return super()._changeform_view(request, object_id, form_url, extra_context)
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):
                return super()._changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:
            setattr(request, _REFUSAL, refused.error)
        try:
            return super()._changeform_view(request, object_id, form_url, extra_context)
        finally:
            delattr(request, _REFUSAL)
