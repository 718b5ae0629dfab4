"""Image reading for the app: the engine's safe reader (see engine/imageio.py)."""

from engine.imageio import (IMAGE_EXTENSIONS, MAX_PIXELS, MAX_SIDE, VIDEO_EXTENSIONS, ImageReadError, is_video,
                            list_images, natural_key, natural_path_key, printable, read_image, write_image)

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "MAX_PIXELS", "MAX_SIDE", "ImageReadError", "read_image",
           "list_images", "natural_key", "natural_path_key", "printable", "is_video", "write_image"]
