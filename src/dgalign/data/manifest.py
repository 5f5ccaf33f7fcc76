"""Where the image benchmarks come from and what a complete copy holds: one table, `MANIFEST`.

Sources are the ones DomainBed's `download.py` uses (Google Drive archives for VLCS, PACS and
OfficeHome; the LILA blobs for TerraIncognita; the VisDA 2019 zips for DomainNet) plus DomainBed's
own list of DomainNet duplicates. Digests are the ones public sources record (`PACS_MD5` and
below); none could be checked against the live files here (no network), and where no source
records one the field is None and nothing is checked; every archive is still checked to be a zip
or tar (a Google Drive quota page is caught there). `dgalign data fetch --no-verify` skips the
digests. Image counts: the totals are the protocol's (docs/protocols.md section 2); the
per-environment counts are the published dataset statistics (they add up to those totals);
TerraIncognita's per-location counts are not known here (None: `data check` compares the total
only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Remote:
    """One file to download. `sha256`/`md5`/`size` None: unknown, not checked."""

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class ImageDatasetSpec:
    """A DomainBed image benchmark: its folder `root/<directory>/<env_dir>/<class>/<image>`,
    environments (DomainBed's names and order: sorted folder names), classes and image counts,
    and how `dgalign data fetch` builds the folder (`layout`):

    - "rename": the archives unpack to one folder `extracted`, renamed to `directory`;
    - "terra": TerraIncognita's camera-trap images sorted into location/category folders;
    - "domainnet": the six domain zips unpack into `directory`, then DomainBed's duplicates go.
    """

    name: str
    directory: str
    env_dirs: tuple[str, ...]
    environments: tuple[str, ...]
    classes: tuple[str, ...]
    total: int
    env_counts: tuple[int, ...] | None
    downloads: tuple[Remote, ...]
    layout: str
    extracted: str = ""
    checkpoint_freq: int = 300
    n_steps: int = 5001
    homepage: str = ""


def _gdrive(file_id: str, filename: str, md5: str | None = None) -> Remote:
    """A Google Drive file (the ids DomainBed downloads with gdown), through the direct-download
    endpoint that skips the virus-scan page for large files."""
    return Remote(
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
        filename,
        md5=md5,
    )


#: Digests recorded by public sources, none verified by us against the files (no network when
#: they were entered): md5s of the Google Drive archives as third-party DomainBed loaders record
#: them, sha256 and sizes of the DomainNet zips from TensorFlow Datasets' checksums.tsv.
PACS_MD5 = "fd5db817f7cdafeef3bfd525aaf9b42e"
VLCS_MD5 = "8870171eba660927d9668f4e515928e4"
OFFICEHOME_MD5 = "b1c14819770c4448fd5b6d931031c91c"
DOMAINNET_SHA256 = {
    "clipart.zip": (1270909081, "f8f248a3e8bbc9868c523ae24e6601b4c2ad102afc60c0efeb4f3255df22354d"),
    "infograph.zip": (
        4338659804,
        "891e14f476317e97b6f06d6498c11d0a5b8d0c8b57210765ed9beb072da611fa",
    ),
    "painting.zip": (
        3679366174,
        "fa47e6d405503ea0286cabd767f176bd30e988b63ddd7b9db16cf030c9770015",
    ),
    "quickdraw.zip": (
        459920701,
        "9f37df2a8c3733703dbb35ad9964202a65f675ca30137756457537536b485d84",
    ),
    "real.zip": (6062039589, "d7fe010b430c5b510f85d657d38c4a1924822695fabea4fef57bd00dba251d63"),
    "sketch.zip": (2633992926, "23a7dbae7016b343e934399beaa8a68728fb5e570ebe2c71df9b75cf91c499fc"),
}


#: TerraIncognita: the camera locations and categories DomainBed keeps, and the names inside the
#: LILA archives (the COCO-style annotation json and the folder of resized images).
TERRA_LOCATIONS = ("38", "43", "46", "100")
TERRA_CATEGORIES = (
    "bird",
    "bobcat",
    "cat",
    "coyote",
    "dog",
    "empty",
    "opossum",
    "rabbit",
    "raccoon",
    "squirrel",
)
TERRA_ANNOTATIONS = "caltech_images_20210113.json"
TERRA_IMAGES = "eccv_18_all_images_sm"

#: DomainBed's list of duplicate DomainNet images (paths relative to `domain_net/`, one a line),
#: removed after extraction. Fetched from DomainBed's repository (branch `main`); its checksum and
#: length are not known here. A copy placed at `<data_dir>/downloads/<filename>` is used instead.
DOMAINNET_DUPLICATES = Remote(
    "https://raw.githubusercontent.com/facebookresearch/DomainBed/main/"
    "domainbed/misc/domain_net_duplicates.txt",
    "domain_net_duplicates.txt",
)
_VISDA = "http://csr.bu.edu/ftp/visda/2019/multi-source/"


def _visda(path: str) -> Remote:
    """A DomainNet zip at `path` below the VisDA 2019 site, with its size and sha256."""
    filename = path.rsplit("/", 1)[-1]
    size, sha256 = DOMAINNET_SHA256[filename]
    return Remote(_VISDA + path, filename, sha256=sha256, size=size)


def _names(text: str) -> tuple[str, ...]:
    """Whitespace-separated class folder names."""
    return tuple(text.split())


# Class folder names, sorted as DomainBed (ImageFolder) indexes them.
_DOMAINNET_CLASSES = _names(
    """
    The_Eiffel_Tower The_Great_Wall_of_China The_Mona_Lisa aircraft_carrier airplane
    alarm_clock ambulance angel animal_migration ant anvil apple arm asparagus axe backpack
    banana bandage barn baseball baseball_bat basket basketball bat bathtub beach bear beard
    bed bee belt bench bicycle binoculars bird birthday_cake blackberry blueberry book
    boomerang bottlecap bowtie bracelet brain bread bridge broccoli broom bucket bulldozer
    bus bush butterfly cactus cake calculator calendar camel camera camouflage campfire
    candle cannon canoe car carrot castle cat ceiling_fan cell_phone cello chair chandelier
    church circle clarinet clock cloud coffee_cup compass computer cookie cooler couch cow
    crab crayon crocodile crown cruise_ship cup diamond dishwasher diving_board dog dolphin
    donut door dragon dresser drill drums duck dumbbell ear elbow elephant envelope eraser
    eye eyeglasses face fan feather fence finger fire_hydrant fireplace firetruck fish
    flamingo flashlight flip_flops floor_lamp flower flying_saucer foot fork frog frying_pan
    garden garden_hose giraffe goatee golf_club grapes grass guitar hamburger hammer hand
    harp hat headphones hedgehog helicopter helmet hexagon hockey_puck hockey_stick horse
    hospital hot_air_balloon hot_dog hot_tub hourglass house house_plant hurricane ice_cream
    jacket jail kangaroo key keyboard knee knife ladder lantern laptop leaf leg light_bulb
    lighter lighthouse lightning line lion lipstick lobster lollipop mailbox map marker
    matches megaphone mermaid microphone microwave monkey moon mosquito motorbike mountain
    mouse moustache mouth mug mushroom nail necklace nose ocean octagon octopus onion oven
    owl paint_can paintbrush palm_tree panda pants paper_clip parachute parrot passport
    peanut pear peas pencil penguin piano pickup_truck picture_frame pig pillow pineapple
    pizza pliers police_car pond pool popsicle postcard potato power_outlet purse rabbit
    raccoon radio rain rainbow rake remote_control rhinoceros rifle river roller_coaster
    rollerskates sailboat sandwich saw saxophone school_bus scissors scorpion screwdriver
    sea_turtle see_saw shark sheep shoe shorts shovel sink skateboard skull skyscraper
    sleeping_bag smiley_face snail snake snorkel snowflake snowman soccer_ball sock
    speedboat spider spoon spreadsheet square squiggle squirrel stairs star steak stereo
    stethoscope stitches stop_sign stove strawberry streetlight string_bean submarine
    suitcase sun swan sweater swing_set sword syringe t-shirt table teapot teddy-bear
    telephone television tennis_racquet tent tiger toaster toe toilet tooth toothbrush
    toothpaste tornado tractor traffic_light train tree triangle trombone truck trumpet
    umbrella underwear van vase violin washing_machine watermelon waterslide whale wheel
    windmill wine_bottle wine_glass wristwatch yoga zebra zigzag
    """
)

_OFFICEHOME_CLASSES = _names(
    """
    Alarm_Clock Backpack Batteries Bed Bike Bottle Bucket Calculator Calendar Candles Chair
    Clipboards Computer Couch Curtains Desk_Lamp Drill Eraser Exit_Sign Fan File_Cabinet
    Flipflops Flowers Folder Fork Glasses Hammer Helmet Kettle Keyboard Knives Lamp_Shade
    Laptop Marker Monitor Mop Mouse Mug Notebook Oven Pan Paper_Clip Pen Pencil Postit_Notes
    Printer Push_Pin Radio Refrigerator Ruler Scissors Screwdriver Shelf Sink Sneakers Soda
    Speaker Spoon TV Table Telephone ToothBrush Toys Trash_Can Webcam
    """
)

#: SVIRO's environments: the car models, also the names of their folders.
_SVIRO_CARS = ("aclass", "escape", "hilux", "i3", "lexus", "tesla", "tiguan", "tucson", "x5", "zoe")


MANIFEST: dict[str, ImageDatasetSpec] = {
    "VLCS": ImageDatasetSpec(
        name="VLCS",
        directory="VLCS",
        env_dirs=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
        environments=("C", "L", "S", "V"),
        classes=("bird", "car", "chair", "dog", "person"),
        total=10729,
        env_counts=(1415, 2656, 3282, 3376),
        downloads=(_gdrive("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8", "VLCS.tar.gz", VLCS_MD5),),
        layout="rename",
        extracted="VLCS",
        homepage="http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017",
    ),
    "PACS": ImageDatasetSpec(
        name="PACS",
        directory="PACS",
        env_dirs=("art_painting", "cartoon", "photo", "sketch"),
        environments=("A", "C", "P", "S"),
        classes=("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
        total=9991,
        env_counts=(2048, 2344, 1670, 3929),
        downloads=(_gdrive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd", "PACS.zip", PACS_MD5),),
        layout="rename",
        extracted="kfold",
        homepage="http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017",
    ),
    "OfficeHome": ImageDatasetSpec(
        name="OfficeHome",
        directory="office_home",
        env_dirs=("Art", "Clipart", "Product", "Real World"),
        environments=("A", "C", "P", "R"),
        classes=_OFFICEHOME_CLASSES,
        total=15588,
        env_counts=(2427, 4365, 4439, 4357),
        downloads=(
            _gdrive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC", "office_home.zip", OFFICEHOME_MD5),
        ),
        layout="rename",
        extracted="OfficeHomeDataset_10072016",
        homepage="http://hemanthdv.org/OfficeHome-Dataset/",
    ),
    "TerraIncognita": ImageDatasetSpec(
        name="TerraIncognita",
        directory="terra_incognita",
        env_dirs=("location_100", "location_38", "location_43", "location_46"),
        environments=("L100", "L38", "L43", "L46"),
        classes=TERRA_CATEGORIES,
        total=24788,
        env_counts=None,
        downloads=(
            Remote(
                "https://lilablobssc.blob.core.windows.net/caltechcameratraps/"
                "eccv_18_all_images_sm.tar.gz",
                "terra_incognita_images.tar.gz",
            ),
            Remote(
                "https://lilablobssc.blob.core.windows.net/caltechcameratraps/labels/"
                "caltech_camera_traps.json.zip",
                "caltech_camera_traps.json.zip",
            ),
        ),
        layout="terra",
        homepage="https://lila.science/datasets/caltech-camera-traps",
    ),
    "DomainNet": ImageDatasetSpec(
        name="DomainNet",
        directory="domain_net",
        env_dirs=("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
        environments=("clip", "info", "paint", "quick", "real", "sketch"),
        classes=_DOMAINNET_CLASSES,
        total=586575,
        env_counts=(48129, 51605, 72266, 172500, 172947, 69128),
        downloads=tuple(
            _visda(path)
            for path in (
                "groundtruth/clipart.zip",
                "infograph.zip",
                "groundtruth/painting.zip",
                "quickdraw.zip",
                "real.zip",
                "sketch.zip",
            )
        ),
        layout="domainnet",
        checkpoint_freq=1000,
        homepage="http://ai.bu.edu/M3SDA/",
    ),
    "SVIRO": ImageDatasetSpec(
        name="SVIRO",
        directory="sviro",
        env_dirs=_SVIRO_CARS,
        environments=_SVIRO_CARS,
        classes=(),
        total=0,
        env_counts=None,
        downloads=(),
        layout="manual",
        homepage="https://sviro.kl.dfki.de",
    ),
}


def get_spec(name: str) -> ImageDatasetSpec:
    """The manifest entry of `name` (case-insensitive)."""
    for key, spec in MANIFEST.items():
        if key.lower() == name.lower():
            return spec
    raise KeyError(name)
