from django.db import migrations

GROUP_NAME = "Reviewers"

# Review and relabel drawings and read the model registry: nothing to add or delete, no user management.
PERMISSIONS = {
    "drawing": ("view", "change"),
    "modelversion": ("view",),
}


def create_reviewers_group(apps, schema_editor):
    # Permissions are normally made by a post_migrate signal, which has not run yet on a fresh
    # database, so make the content types and permissions needed here (as that signal would).
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name=GROUP_NAME)
    permissions = []
    for model_name, actions in PERMISSIONS.items():
        content_type, _ = ContentType.objects.get_or_create(app_label="predictor", model=model_name)
        verbose_name = apps.get_model("predictor", model_name)._meta.verbose_name_raw
        for action in actions:
            permission, _ = Permission.objects.get_or_create(
                content_type=content_type,
                codename=f"{action}_{model_name}",
                defaults={"name": f"Can {action} {verbose_name}"},
            )
            permissions.append(permission)
    group.permissions.set(permissions)


def delete_reviewers_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("predictor", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_reviewers_group, delete_reviewers_group)]
