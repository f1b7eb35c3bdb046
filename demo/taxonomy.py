"""What the demo sells: the category tree with its price ranges, the words titles are made of,
and how each category looks (silhouette and pattern) in the drawn pictures."""

from __future__ import annotations

# category2 -> [(category3, price range in USD, category1 choices)].
TAXONOMY: dict[str, list[tuple[str, tuple[int, int], tuple[str, ...]]]] = {
    "BAGS": [
        ("TOTE BAGS", (1500, 3200), ("WOMAN", "MAN")),
        ("CROSSBODY BAGS", (1100, 2600), ("WOMAN",)),
    ],
    "SHOES": [
        ("SNEAKERS", (550, 990), ("WOMAN", "MAN", "KIDS")),
        ("BOOTS", (890, 1790), ("WOMAN", "MAN")),
    ],
    "SCARVES": [
        ("CASHMERE SCARVES", (490, 890), ("WOMAN", "MAN")),
        ("SILK SCARVES", (350, 650), ("WOMAN",)),
    ],
    "COATS": [
        ("TRENCH COATS", (1990, 3990), ("WOMAN", "MAN")),
        ("CAR COATS", (1690, 2990), ("WOMAN", "MAN")),
    ],
    "JACKETS": [("QUILTED JACKETS", (990, 1890), ("WOMAN", "MAN", "KIDS"))],
    "KNITWEAR": [
        ("SWEATERS", (690, 1290), ("WOMAN", "MAN", "KIDS")),
        ("CARDIGANS", (790, 1390), ("WOMAN",)),
    ],
    "SHIRTS": [("COTTON SHIRTS", (450, 790), ("WOMAN", "MAN", "KIDS"))],
    "T-SHIRTS": [("LOGO T-SHIRTS", (290, 550), ("WOMAN", "MAN", "KIDS"))],
    "DRESSES": [("MIDI DRESSES", (1190, 2490), ("WOMAN", "KIDS"))],
    "SKIRTS": [("PLEATED SKIRTS", (690, 1290), ("WOMAN", "KIDS"))],
    "TROUSERS": [("TAILORED TROUSERS", (590, 1190), ("WOMAN", "MAN"))],
    "BELTS": [("LEATHER BELTS", (390, 690), ("WOMAN", "MAN"))],
    "WALLETS": [
        ("CARD CASES", (290, 550), ("WOMAN", "MAN")),
        ("ZIP WALLETS", (490, 850), ("WOMAN", "MAN")),
    ],
    "HATS": [("BUCKET HATS", (390, 590), ("WOMAN", "MAN", "KIDS"))],
    "JEWELLERY": [("EARRINGS", (350, 750), ("WOMAN",))],
    "SUNGLASSES": [("SQUARE SUNGLASSES", (290, 490), ("WOMAN", "MAN"))],
    "FRAGRANCES": [("EAU DE PARFUM", (110, 260), ("WOMAN", "MAN"))],
    "SWIMWEAR": [("SWIM SHORTS", (290, 450), ("MAN", "KIDS"))],
    "GLOVES": [("LEATHER GLOVES", (350, 590), ("WOMAN", "MAN"))],
    "UMBRELLAS": [("CHECK UMBRELLAS", (290, 450), ("WOMAN", "MAN"))],
}
NOUNS: dict[str, str] = {
    "TOTE BAGS": "Tote",
    "CROSSBODY BAGS": "Crossbody Bag",
    "SNEAKERS": "Sneakers",
    "BOOTS": "Boots",
    "CASHMERE SCARVES": "Cashmere Scarf",
    "SILK SCARVES": "Silk Scarf",
    "TRENCH COATS": "Trench Coat",
    "CAR COATS": "Car Coat",
    "QUILTED JACKETS": "Quilted Jacket",
    "SWEATERS": "Sweater",
    "CARDIGANS": "Cardigan",
    "COTTON SHIRTS": "Shirt",
    "LOGO T-SHIRTS": "T-shirt",
    "MIDI DRESSES": "Midi Dress",
    "PLEATED SKIRTS": "Pleated Skirt",
    "TAILORED TROUSERS": "Trousers",
    "LEATHER BELTS": "Belt",
    "CARD CASES": "Card Case",
    "ZIP WALLETS": "Zip Wallet",
    "BUCKET HATS": "Bucket Hat",
    "EARRINGS": "Earrings",
    "SQUARE SUNGLASSES": "Sunglasses",
    "EAU DE PARFUM": "Eau de Parfum",
    "SWIM SHORTS": "Swim Shorts",
    "LEATHER GLOVES": "Gloves",
    "CHECK UMBRELLAS": "Umbrella",
}
STYLES = (
    "Vintage Check",
    "Monogram",
    "Equestrian Knight",
    "Heritage",
    "Archive",
    "Logo",
    "Quilted",
    "Icon Stripe",
    "Classic",
    "Oversized",
    "Slim",
    "Cropped",
    "Reversible",
)
MATERIALS = (
    "Cotton",
    "Wool",
    "Leather",
    "Cashmere",
    "Silk",
    "Nylon",
    "Canvas",
    "Suede",
    "Gabardine",
    "Technical",
    "Merino",
    "Linen",
)
MODEL_NAMES = (
    "Lola",
    "Olympia",
    "Rocking Horse",
    "Pocket",
    "Knight",
    "Kensington",
    "Chelsea",
    "Camden",
    "Westminster",
    "Harlow",
    "Soho",
    "Mayfair",
    "Islington",
    "Brompton",
)


# category3 -> (silhouette, pattern). Every category has its own product-like outline, and the
# two categories sharing a pattern draw it in different ink (plain / accent), because a small ViT
# trained from scratch reads local texture far sooner than fine shape: the pictures must differ
# in texture for the tiny model to tell the categories apart.
CATEGORY_LOOKS: dict[str, tuple[str, str]] = {
    "LEATHER BELTS": ("belt", "plain"),
    "TRENCH COATS": ("trench", "tartan"),
    "ZIP WALLETS": ("zip_wallet", "dots"),
    "MIDI DRESSES": ("dress", "dots_accent"),
    "CARDIGANS": ("cardigan", "polka"),
    "EARRINGS": ("earrings", "polka_accent"),
    "CHECK UMBRELLAS": ("umbrella", "check"),
    "CAR COATS": ("car_coat", "check_accent"),
    "TOTE BAGS": ("tote", "windowpane"),
    "SNEAKERS": ("sneaker", "windowpane_accent"),
    "SQUARE SUNGLASSES": ("sunglasses", "stripes"),
    "TAILORED TROUSERS": ("trousers", "stripes_accent"),
    "CARD CASES": ("card_case", "twill"),
    "CASHMERE SCARVES": ("long_scarf", "twill_accent"),
    "SWIM SHORTS": ("swim_shorts", "bands"),
    "EAU DE PARFUM": ("perfume", "bands_accent"),
    "LOGO T-SHIRTS": ("t_shirt", "rugby"),
    "LEATHER GLOVES": ("gloves", "rugby_accent"),
    "BUCKET HATS": ("bucket_hat", "pinstripe"),
    "BOOTS": ("boot", "pinstripe_accent"),
    "PLEATED SKIRTS": ("skirt", "awning"),
    "COTTON SHIRTS": ("shirt", "awning_accent"),
    "QUILTED JACKETS": ("quilted_jacket", "argyle"),
    "SILK SCARVES": ("square_scarf", "argyle_accent"),
    "CROSSBODY BAGS": ("crossbody", "crosses"),
    "SWEATERS": ("sweater", "crosses_accent"),
}


def category_looks() -> dict[str, tuple[str, str]]:
    """Each category3's (silhouette, pattern): that is what the model can learn to see."""
    cats = [c3 for entries in TAXONOMY.values() for c3, _, _ in entries]
    missing = sorted(set(cats) - set(CATEGORY_LOOKS))
    if missing:
        raise ValueError(f"categories without a look: {missing}")
    return {c3: CATEGORY_LOOKS[c3] for c3 in cats}
