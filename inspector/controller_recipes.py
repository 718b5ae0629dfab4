"""The controller's recipes concern: saving, applying and deleting named product recipes. A part of
InspectorController."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QInputDialog


from .loaded_model import automatic_category
from .recipes import Recipe, RecipeError
from .station import RECIPE_OUTPUTS


class RecipeControl:
    """Recipes: a part of InspectorController."""

    # ----------------------------------------------------------------- recipes
    def _show_recipes(self) -> None:
        recipes, problems = self.recipes.load_all()
        for problem in problems:
            self.message(problem, "warning")
        self.window.show_recipes([r.name for r in recipes], self.recipe_name, self.recipe_modified)

    def _mark_recipe_modified(self) -> None:
        if self.recipe_name and not self.recipe_modified:
            self.recipe_modified = True
            # parts are logged as judged by the recipe's revision changed since ('r3*')
            self.context = replace(self.context, recipe_version=self.context.recipe_version.rstrip("*") + "*")
            self.request_configure.emit(self.context)
            self._show_recipes()

    def _adopt_recipe(self, recipe: Recipe, push: bool = True) -> None:
        """`recipe` is in force and unmodified; parts are logged under its name (sent to the worker now
        unless `push` is False: the caller sends the whole recipe a moment later)."""
        self.recipe_name = recipe.name
        self.recipe_modified = False
        self.context = replace(self.context, recipe=recipe.name, recipe_version=f"r{recipe.revision}")
        if push:
            self._push_context()

    def choose_recipe_name(self) -> None:
        name, ok = QInputDialog.getText(self.window, "Save recipe", "Product / recipe name:", text=self.recipe_name)
        if ok and name.strip():
            self.save_recipe(name.strip())

    def current_recipe(self, name: str) -> Recipe:
        model, ctx = self.model_info, self.context
        return Recipe(name=name, model=self.model_path, category=ctx.category, fail_threshold=ctx.fail_threshold,
                      review_threshold=ctx.review_threshold, roi=ctx.roi.to_list() if ctx.roi else None,
                      source=self.source_spec.to_dict() if self.source_spec else None,
                      reverse_steps=model.reverse_steps if model else None,
                      gate_fusion=model.gate_fusion if model else None,
                      extra={RECIPE_OUTPUTS: list(self.line.urls)} if self.line.urls else {})

    def save_recipe(self, name: str) -> None:
        if not self.permit("recipe_edit"):
            return
        try:
            old = self.recipes.load(name).to_dict() if name in self.recipes.names() else None
            recipe = self.current_recipe(name)
            path = self.recipes.save(recipe)
            self.audit("recipe", name, old, recipe.to_dict())
        except RecipeError as e:
            self.message(str(e), "error")
            return
        self._adopt_recipe(recipe)
        self._show_recipes()
        self.settings.setValue("recipe/current", recipe.name)
        self.message(f"Recipe '{recipe.name}' saved ({path})", "ok")

    def delete_recipe(self, name: str) -> None:
        if not self.permit("recipe_edit"):
            return
        try:
            old = self.recipes.load(name).to_dict()
            self.recipes.delete(name)
        except RecipeError as e:
            self.message(str(e), "error")
            return
        self.audit("recipe", name, old, "deleted")
        if name == self.recipe_name:
            self.recipe_name = ""
            self.recipe_modified = False
            self.context = replace(self.context, recipe="", recipe_version="")
            self._push_context()
        self._show_recipes()
        self.message(f"Recipe '{name}' deleted")

    def apply_recipe(self, name: str) -> None:
        """Switch product in one click: model (loaded if different), category, thresholds, ROI, source."""
        try:
            recipe = self.recipes.load(name)
        except RecipeError as e:
            self.message(str(e), "error")
            return
        self.audit("recipe_selected", name, self.recipe_name, f"{name} r{recipe.revision}")
        self._adopt_recipe(recipe, push=False)
        self.settings.setValue("recipe/current", recipe.name)
        self.line.set_urls(recipe.extra.get(RECIPE_OUTPUTS) or [])
        overrides = {k: v for k, v in (("reverse_steps", recipe.reverse_steps), ("gate_fusion", recipe.gate_fusion))
                     if v is not None}
        if recipe.model and (recipe.model != self.model_path or self.model_info is None):
            if not Path(recipe.model).exists():
                self.message(f"Recipe '{name}': model {recipe.model} not found", "error")
            else:
                if overrides.get("reverse_steps"):
                    overrides["start_t"] = overrides["reverse_steps"]
                self._pending_recipe = recipe
                self.open_model(recipe.model, overrides)
        else:
            if overrides and self.model_info is not None:
                self.request_settings.emit(overrides)
            self._apply_recipe_settings(recipe)
        spec = recipe.source_spec
        if spec is not None:
            self.open_source(spec, autostart=False)
        self._show_recipes()
        self.message(f"Recipe '{name}' selected")

    def _apply_recipe_settings(self, recipe: Recipe) -> None:
        info = self.model_info.info if self.model_info is not None else None
        classes = list(info.classes) if info is not None else []
        auto, auto_label = automatic_category(info)
        category = recipe.category if recipe.category in classes else None
        if recipe.category and category is None and classes:
            self.message(f"Recipe '{recipe.name}': category '{recipe.category}' is not in this model", "warning")
        if category is None and not auto and classes:
            category = classes[0]
        self.context = replace(self.context, category=category, roi=recipe.roi_value, recipe=recipe.name)
        self.window.show_categories(classes, category, auto, auto_label)
        self.set_thresholds(recipe.fail_threshold, recipe.review_threshold, mark_modified=False)
        self._show_roi()
        self.recipe_modified = False
        self._show_recipes()
