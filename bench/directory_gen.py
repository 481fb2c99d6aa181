"""A fictitious agency directory of the nation's size, as a topology file lienthong reads.

    python bench/directory_gen.py today -o today.yaml     # 35 hubs, 4,145 agencies
    python bench/directory_gen.py 2019 -o 2019.yaml      # 757 hubs, 12,510 agencies (-o 2019.json: JSON)
        [--namespace NS] [--amqp-url URL] [--management-url URL] [--provinces N]

Two shapes:

- ``today`` (two tiers, since 2025-07-01): the national hub with 99 central agencies, and the 34
  provinces, each a hub holding its people's committee, 20 departments and 98 communes or wards
  (3,332 in all; the real count is about 3,320).
- ``2019`` (three tiers): the national hub with the same 99 central agencies, the 63 provinces of
  2019 each with its committee and 20 departments, and 11 district hubs per province (693), each
  with its district committee and 15 communes (10,395).

Codes are in the QĐ 20/2020/QĐ-TTg format ``V1V2V3.Z1Z2.Y1Y2.<level 1>``: the provinces' level-1
codes are the real ones (H01 An Giang ... H63 Yên Bái; a merged province of today keeps the code of
the province whose name it kept), the central agencies' G codes and everything below a province
are fictitious, following the sample topology's conventions (departments ``000.00.01``-``20``,
district committees ``000.00.31``..., their communes ``001.00.31``..., today's communes
``000.00.51``...).  Names are Vietnamese (NFC), made from real place-name syllables; the places
themselves are invented.  Each agency says its ``level`` and ``parent`` (the committee it reports
to); today's communes carry an ``old_code`` (their code under the former district).  The output is
the same for the same arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import unicodedata
from pathlib import Path
from typing import Any

import yaml

# The 63 provinces of 2019 in the order of their QĐ 20/2020 codes (H01 ... H63).
PROVINCES_2019 = [
    "An Giang", "Bà Rịa - Vũng Tàu", "Bắc Giang", "Bắc Kạn", "Bạc Liêu", "Bắc Ninh", "Bến Tre", "Bình Định",
    "Bình Dương", "Bình Phước", "Bình Thuận", "Cà Mau", "Cần Thơ", "Cao Bằng", "Đà Nẵng", "Đắk Lắk",
    "Đắk Nông", "Điện Biên", "Đồng Nai", "Đồng Tháp", "Gia Lai", "Hà Giang", "Hà Nam", "Hà Nội", "Hà Tĩnh",
    "Hải Dương", "Hải Phòng", "Hậu Giang", "Hồ Chí Minh", "Hòa Bình", "Hưng Yên", "Khánh Hòa", "Kiên Giang",
    "Kon Tum", "Lai Châu", "Lâm Đồng", "Lạng Sơn", "Lào Cai", "Long An", "Nam Định", "Nghệ An", "Ninh Bình",
    "Ninh Thuận", "Phú Thọ", "Phú Yên", "Quảng Bình", "Quảng Nam", "Quảng Ngãi", "Quảng Ninh", "Quảng Trị",
    "Sóc Trăng", "Sơn La", "Tây Ninh", "Thái Bình", "Thái Nguyên", "Thanh Hóa", "Thừa Thiên Huế", "Tiền Giang",
    "Trà Vinh", "Tuyên Quang", "Vĩnh Long", "Vĩnh Phúc", "Yên Bái",
]
CITIES_2019 = {"Hà Nội", "Hải Phòng", "Đà Nẵng", "Hồ Chí Minh", "Cần Thơ"}
# Today's 34 (Resolution 202/2025/QH15): the name kept, then the provinces merged into it.
PROVINCES_TODAY: list[tuple[str, tuple[str, ...]]] = [
    ("Hà Nội", ()), ("Huế", ("Thừa Thiên Huế",)), ("Lai Châu", ()), ("Điện Biên", ()), ("Sơn La", ()),
    ("Lạng Sơn", ()), ("Quảng Ninh", ()), ("Thanh Hóa", ()), ("Nghệ An", ()), ("Hà Tĩnh", ()), ("Cao Bằng", ()),
    ("Tuyên Quang", ("Hà Giang",)), ("Lào Cai", ("Yên Bái",)), ("Thái Nguyên", ("Bắc Kạn",)),
    ("Phú Thọ", ("Vĩnh Phúc", "Hòa Bình")), ("Bắc Ninh", ("Bắc Giang",)), ("Hưng Yên", ("Thái Bình",)),
    ("Hải Phòng", ("Hải Dương",)), ("Ninh Bình", ("Hà Nam", "Nam Định")), ("Quảng Trị", ("Quảng Bình",)),
    ("Đà Nẵng", ("Quảng Nam",)), ("Quảng Ngãi", ("Kon Tum",)), ("Gia Lai", ("Bình Định",)),
    ("Khánh Hòa", ("Ninh Thuận",)), ("Lâm Đồng", ("Đắk Nông", "Bình Thuận")), ("Đắk Lắk", ("Phú Yên",)),
    ("Hồ Chí Minh", ("Bình Dương", "Bà Rịa - Vũng Tàu")), ("Đồng Nai", ("Bình Phước",)),
    ("Tây Ninh", ("Long An",)), ("Cần Thơ", ("Sóc Trăng", "Hậu Giang")),
    ("Vĩnh Long", ("Bến Tre", "Trà Vinh")), ("Đồng Tháp", ("Tiền Giang",)), ("Cà Mau", ("Bạc Liêu",)),
    ("An Giang", ("Kiên Giang",)),
]
CITIES_TODAY = {"Hà Nội", "Huế", "Hải Phòng", "Đà Nẵng", "Hồ Chí Minh", "Cần Thơ"}
CENTRAL_HEADS = [
    "Văn phòng Chính phủ", "Bộ Quốc phòng", "Bộ Công an", "Bộ Ngoại giao", "Bộ Nội vụ", "Bộ Tư pháp",
    "Bộ Tài chính", "Bộ Công Thương", "Bộ Nông nghiệp và Môi trường", "Bộ Xây dựng",
    "Bộ Văn hóa, Thể thao và Du lịch", "Bộ Khoa học và Công nghệ", "Bộ Giáo dục và Đào tạo", "Bộ Y tế",
    "Bộ Dân tộc và Tôn giáo", "Ngân hàng Nhà nước Việt Nam", "Thanh tra Chính phủ", "Đài Tiếng nói Việt Nam",
    "Đài Truyền hình Việt Nam", "Thông tấn xã Việt Nam", "Viện Hàn lâm Khoa học và Công nghệ Việt Nam",
    "Viện Hàn lâm Khoa học xã hội Việt Nam",
]
CENTRAL_UNITS = [
    "Văn phòng", "Vụ Pháp chế", "Vụ Tổ chức cán bộ", "Vụ Kế hoạch - Tài chính", "Vụ Hợp tác quốc tế",
    "Thanh tra", "Cục Chuyển đổi số",
]
DEPARTMENTS = [
    "Văn phòng UBND", "Sở Nội vụ", "Sở Tài chính", "Sở Tư pháp", "Sở Công Thương", "Sở Xây dựng",
    "Sở Nông nghiệp và Môi trường", "Sở Giáo dục và Đào tạo", "Sở Y tế", "Sở Khoa học và Công nghệ",
    "Sở Văn hóa, Thể thao và Du lịch", "Sở Dân tộc và Tôn giáo", "Sở Ngoại vụ", "Thanh tra",
    "Ban Quản lý các khu công nghiệp", "Công an", "Bộ Chỉ huy Quân sự", "Đài Phát thanh và Truyền hình",
    "Bảo hiểm xã hội", "Kho bạc Nhà nước",
]
SYLLABLES = [
    "An", "Bình", "Châu", "Chiến", "Cẩm", "Diễn", "Đông", "Đồng", "Đức", "Giang", "Hà", "Hải", "Hiệp", "Hòa",
    "Hồng", "Hợp", "Hưng", "Kim", "Lạc", "Lâm", "Lộc", "Long", "Lợi", "Minh", "Mỹ", "Nam", "Nghĩa", "Ngọc",
    "Nhân", "Phong", "Phú", "Phúc", "Phước", "Quang", "Quỳnh", "Sơn", "Tân", "Tây", "Thạch", "Thái", "Thanh",
    "Thành", "Thịnh", "Thuận", "Thượng", "Tiến", "Trung", "Trường", "Tường", "Vân", "Vĩnh", "Xuân", "Yên",
]
CENTRAL = 99
DEPARTMENTS_PER_PROVINCE = 20
COMMUNES_TODAY = 98
DISTRICTS_2019, COMMUNES_PER_DISTRICT = 11, 15


def code_2019(province: str) -> str:
    return f"H{PROVINCES_2019.index(province) + 1:02d}"


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class Names:
    """Place names made from two syllables, unique within one province."""

    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        self.used: set[str] = set()

    def next(self) -> str:
        while True:
            name = f"{self.rng.choice(SYLLABLES)} {self.rng.choice(SYLLABLES)}"
            if name.split()[0] != name.split()[1] and name not in self.used:
                self.used.add(name)
                return name


def central_agencies() -> list[dict[str, Any]]:
    """The 99 central agencies on the national hub: the heads (G01...) and units under them."""
    out = [{"organ_id": f"000.00.00.G{n + 1:02d}", "name": head, "hub": "national", "level": "ministry"}
           for n, head in enumerate(CENTRAL_HEADS)]
    n = 0
    while len(out) < CENTRAL:
        head, unit = divmod(n, len(CENTRAL_UNITS))
        out.append({"organ_id": f"000.00.{unit + 1:02d}.G{head + 1:02d}",
                    "name": f"{CENTRAL_UNITS[unit]}, {CENTRAL_HEADS[head]}", "hub": "national",
                    "level": "ministry", "parent": f"000.00.00.G{head + 1:02d}"})
        n += 1
    return out


def province_agencies(name: str, code: str, hub: str, city: bool) -> list[dict[str, Any]]:
    """A province's committee and its departments."""
    kind = "thành phố" if city else "tỉnh"
    committee = f"000.00.00.{code}"
    out = [{"organ_id": committee, "name": f"UBND {kind} {name}", "hub": hub, "level": "province"}]
    for n, dept in enumerate(DEPARTMENTS[:DEPARTMENTS_PER_PROVINCE]):
        title = f"{dept} {kind} {name}" if dept in ("Văn phòng UBND", "Thanh tra", "Công an", "Bảo hiểm xã hội",
                                                    "Kho bạc Nhà nước", "Bộ Chỉ huy Quân sự") else f"{dept} {name}"
        out.append({"organ_id": f"000.00.{n + 1:02d}.{code}", "name": title, "hub": hub, "level": "department",
                    "parent": committee})
    return out


def today() -> dict[str, Any]:
    hubs: list[dict[str, Any]] = [{"id": "national", "name": "Trục liên thông văn bản quốc gia", "tier": "national"}]
    agencies = central_agencies()
    for name, merged in PROVINCES_TODAY:
        code = code_2019("Thừa Thiên Huế" if name == "Huế" else name)
        hubs.append({"id": code, "name": name, "parent": "national", "tier": "province"})
        agencies += province_agencies(name, code, code, name in CITIES_TODAY)
        names = Names(f"today-{code}")
        former = [code] + [code_2019(m) for m in merged]  # the province a commune was in before 2025
        for k in range(COMMUNES_TODAY):
            ward = k % 7 == 0  # some are wards (phường)
            old = former[k % len(former)]
            agencies.append({"organ_id": f"000.{k // 49:02d}.{51 + k % 49:02d}.{code}",
                             "name": f"UBND {'phường' if ward else 'xã'} {names.next()}", "hub": code,
                             "level": "commune", "parent": f"000.00.00.{code}",
                             "old_code": f"{k % 15 + 1:03d}.00.{31 + k % DISTRICTS_2019:02d}.{old}"})
    return {"hubs": hubs, "agencies": agencies}


def shape_2019(provinces: int = len(PROVINCES_2019)) -> dict[str, Any]:
    hubs: list[dict[str, Any]] = [{"id": "national", "name": "Trục liên thông văn bản quốc gia", "tier": "national"}]
    agencies = central_agencies()
    for name in PROVINCES_2019[:provinces]:
        code = code_2019(name)
        city = name in CITIES_2019
        hubs.append({"id": code, "name": name, "parent": "national", "tier": "province"})
        agencies += province_agencies(name, code, code, city)
        names = Names(f"2019-{code}")
        for d in range(DISTRICTS_2019):
            district, y = names.next(), 31 + d
            hub = f"{code}-D{y}"
            kind, commune_kind = ("quận", "phường") if city and d < 4 else ("huyện", "xã")
            hubs.append({"id": hub, "name": f"{kind.capitalize()} {district} ({name})", "parent": code,
                         "tier": "district"})
            committee = f"000.00.{y}.{code}"
            agencies.append({"organ_id": committee, "name": f"UBND {kind} {district}", "hub": hub,
                             "level": "district", "parent": f"000.00.00.{code}"})
            agencies += [{"organ_id": f"{c + 1:03d}.00.{y}.{code}", "name": f"UBND {commune_kind} {names.next()}",
                          "hub": hub, "level": "commune", "parent": committee}
                         for c in range(COMMUNES_PER_DISTRICT)]
    return {"hubs": hubs, "agencies": agencies}


def generate(shape: str, *, namespace: str = "", amqp_url: str = "", management_url: str = "",
             provinces: int | None = None) -> dict[str, Any]:
    """The topology (a mapping, as ``Topology.from_dict`` reads it) of ``shape``: ``today`` or ``2019``."""
    raw = today() if shape == "today" else shape_2019(provinces or len(PROVINCES_2019))
    if shape == "today" and provinces:
        keep = {h["id"] for h in raw["hubs"][:provinces + 1]}
        raw = {"hubs": raw["hubs"][:provinces + 1], "agencies": [a for a in raw["agencies"] if a["hub"] in keep]}
    for agency in raw["agencies"]:
        agency["name"] = nfc(agency["name"])
    out: dict[str, Any] = {}
    if namespace:
        out["namespace"] = namespace
    if amqp_url:
        out["amqp_url"] = amqp_url
    if management_url:
        out["management_url"] = management_url
    return {**out, **raw}


def write(raw: dict[str, Any], path: Path) -> None:
    """Write as the sample is written (one flow mapping per agency, UTF-8), or as JSON when the
    file's name ends in ``.json`` (which lienthong reads 20 times faster)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(raw, ensure_ascii=False, indent=0), encoding="utf-8")
        return
    head = {k: v for k, v in raw.items() if k not in ("hubs", "agencies")}
    dump = yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper
    parts = [yaml.dump(head, Dumper=dump, allow_unicode=True, sort_keys=False) if head else "",
             yaml.dump({"hubs": raw["hubs"]}, Dumper=dump, allow_unicode=True, sort_keys=False),
             "agencies:\n"]
    parts += ["  - " + yaml.dump(a, Dumper=dump, allow_unicode=True, sort_keys=False, default_flow_style=True,
                                 width=1000) for a in raw["agencies"]]
    path.write_text("".join(parts), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=["today", "2019"])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--namespace", default="", help="vhost and user prefix (default: lienthong's)")
    ap.add_argument("--amqp-url", default="", help="the brokers' AMQP URL (default: lienthong's)")
    ap.add_argument("--management-url", default="", help="the brokers' management URL, without an account")
    ap.add_argument("--provinces", type=int, default=None, help="only the first N provinces")
    args = ap.parse_args()
    raw = generate(args.shape, namespace=args.namespace, amqp_url=args.amqp_url,
                   management_url=args.management_url, provinces=args.provinces)
    write(raw, args.output)
    print(f"{args.output}: {len(raw['hubs'])} hubs, {len(raw['agencies'])} agencies", file=sys.stderr)


if __name__ == "__main__":
    main()
