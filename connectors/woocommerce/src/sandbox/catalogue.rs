//! A generated hardware distributor's catalogue: the sparse data enrichd is for (codes, weights,
//! dimensions, a supplier line; many descriptions missing), deterministic from a seed.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

struct Family {
    category: &'static str,
    code: &'static str,
    items: &'static [&'static str],
    sizes: &'static [&'static str],
    materials: &'static [&'static str],
    finishes: &'static [&'static str],
    pack: &'static [u32],
    price: (f64, f64),
    weight_kg: (f64, f64),
}

const FAMILIES: [Family; 5] = [
    Family {
        category: "Fasteners & Fixings",
        code: "FAS",
        items: &[
            "Hex Bolt",
            "Hex Nut",
            "Wood Screw",
            "Machine Screw",
            "Flat Washer",
            "Wall Plug",
            "Coach Screw",
            "Threaded Rod",
        ],
        sizes: &["M4", "M5", "M6", "M8", "M10", "M12", "4x40mm", "5x60mm", "6x80mm"],
        materials: &["Steel", "Stainless Steel A2", "Stainless Steel A4", "Brass", "Nylon"],
        finishes: &["Zinc Plated", "Hot-Dip Galvanised", "Black Oxide", "Plain", "Yellow Passivated"],
        pack: &[10, 25, 50, 100, 200],
        price: (1.5, 24.0),
        weight_kg: (0.05, 2.5),
    },
    Family {
        category: "Hand Tools",
        code: "HT",
        items: &[
            "Claw Hammer",
            "Combination Spanner",
            "Screwdriver",
            "Adjustable Wrench",
            "Utility Knife",
            "Tape Measure",
            "Spirit Level",
            "Hacksaw",
        ],
        sizes: &["13mm", "17mm", "250mm", "300mm", "600mm", "5m", "8m", "PZ2 x 100mm", "16oz"],
        materials: &["Chrome Vanadium", "Carbon Steel", "Aluminium", "Fibreglass"],
        finishes: &["Satin Chrome", "Black Phosphate", "Powder Coated", "Polished"],
        pack: &[1],
        price: (4.0, 65.0),
        weight_kg: (0.1, 1.8),
    },
    Family {
        category: "Power Tool Accessories",
        code: "PTA",
        items: &[
            "HSS Drill Bit",
            "SDS-Plus Masonry Bit",
            "Jigsaw Blade",
            "Cutting Disc",
            "Flap Disc",
            "Hole Saw",
            "Impact Screwdriver Bit",
        ],
        sizes: &["3.0mm", "6.0mm", "8x160mm", "10x210mm", "115mm", "125mm", "68mm", "PH2 25mm", "T101B"],
        materials: &["HSS-G", "HSS-Co 5%", "Tungsten Carbide", "Bi-Metal", "Zirconia", "Aluminium Oxide"],
        finishes: &["Titanium Coated", "Bright", "Black & Gold", "Uncoated"],
        pack: &[1, 5, 10],
        price: (2.5, 48.0),
        weight_kg: (0.01, 0.9),
    },
    Family {
        category: "Plumbing & Heating",
        code: "PLB",
        items: &[
            "Compression Elbow",
            "Isolating Valve",
            "Push-Fit Tee",
            "Copper Pipe",
            "PTFE Tape",
            "Basin Waste",
            "Radiator Valve",
        ],
        sizes: &["15mm", "22mm", "28mm", "1/2\"", "3/4\"", "12m"],
        materials: &["Brass", "Copper", "PVC", "Polybutylene", "Chrome-Plated Brass"],
        finishes: &["Chrome", "Natural", "White", "Satin Nickel"],
        pack: &[1, 2, 10],
        price: (0.9, 38.0),
        weight_kg: (0.02, 3.2),
    },
    Family {
        category: "Electrical",
        code: "ELE",
        items: &[
            "Cable Tie",
            "Lever Connector",
            "Twin & Earth Cable",
            "Junction Box",
            "Insulation Tape",
            "Cable Clip",
            "Back Box",
        ],
        sizes: &["200x4.8mm", "2.5mm²", "1.5mm²", "30A", "19mm x 20m", "7mm", "25mm", "35mm"],
        materials: &["Nylon 6.6", "PVC", "Polycarbonate", "Copper", "Steel"],
        finishes: &["Black", "Natural", "White", "Grey", "Galvanised"],
        pack: &[1, 10, 50, 100],
        price: (0.8, 89.0),
        weight_kg: (0.01, 6.0),
    },
];

const SUPPLIERS: [&str; 6] = [
    "Brightmoor Fixings Ltd",
    "Kessler Werkzeug GmbH",
    "Northgate Trade Supply",
    "Albion Pipe & Valve Co.",
    "Rheinfeld Elektro AG",
    "Pennine Tool Distributors",
];

/// `n` `POST products` bodies for a hardware distributor, deterministic from `seed`. About
/// `missing_description_share` (0.0–1.0) of them have an empty `description`; all carry a SKU,
/// price, weight, dimensions, a category, attributes (material, size, finish) and a supplier line
/// (in `short_description` and the `_supplier_ref` meta key). Some have images, some of those
/// without alt text; some have Yoast SEO meta; a few are drafts.
pub fn generate_catalogue(n: usize, seed: u64, missing_description_share: f64) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut used_skus = std::collections::HashSet::new();
    (0..n)
        .map(|i| {
            let family = &FAMILIES[rng.random_range(0..FAMILIES.len())];
            let item = *family.items.choose(&mut rng).expect("non-empty");
            let size = *family.sizes.choose(&mut rng).expect("non-empty");
            let material = *family.materials.choose(&mut rng).expect("non-empty");
            let finish = *family.finishes.choose(&mut rng).expect("non-empty");
            let pack = *family.pack.choose(&mut rng).expect("non-empty");
            let supplier = SUPPLIERS[rng.random_range(0..SUPPLIERS.len())];
            let pack_text = if pack > 1 { format!(" (Pack of {pack})") } else { String::new() };
            let name = format!("{item} {size} {material} {finish}{pack_text}");
            let initials: String = item.split_whitespace().filter_map(|w| w.chars().next()).collect();
            let mut sku = format!("{}-{}-{:05}", family.code, initials.to_uppercase(), 10_000 + i * 7 % 90_000);
            while !used_skus.insert(sku.clone()) {
                sku.push('X');
            }
            let price = rng.random_range(family.price.0..family.price.1);
            let weight = rng.random_range(family.weight_kg.0..family.weight_kg.1);
            let supplier_ref = format!("{}-{:06}", &supplier[..3].to_uppercase(), rng.random_range(0..1_000_000));
            let description = if rng.random_bool(missing_description_share.clamp(0.0, 1.0)) {
                String::new()
            } else {
                format!(
                    "<p>{item} in {material}, {finish}. Size {size}.</p>\n<ul><li>Trade quality</li><li>Sold {}</li></ul>",
                    if pack > 1 { format!("in packs of {pack}") } else { "individually".to_owned() }
                )
            };
            let mut meta = vec![json!({"key": "_supplier_ref", "value": supplier_ref})];
            if rng.random_bool(0.2) {
                meta.push(json!({"key": "_yoast_wpseo_title", "value": format!("{item} {size} | Trade Hardware")}));
                if rng.random_bool(0.5) {
                    meta.push(json!({"key": "_yoast_wpseo_metadesc", "value": format!("{item} {size}, {material}, {finish}. Next-day trade delivery.")}));
                }
            }
            let images: Vec<Value> = if rng.random_bool(0.4) {
                let alt = if rng.random_bool(0.5) { String::new() } else { format!("{item} {size}") };
                vec![json!({"src": format!("https://images.example.com/catalogue/{}.jpg", sku.to_lowercase()), "alt": alt})]
            } else {
                Vec::new()
            };
            json!({
                "name": name,
                "type": "simple",
                "status": if rng.random_bool(0.03) { "draft" } else { "publish" },
                "sku": sku,
                "regular_price": format!("{price:.2}"),
                "description": description,
                "short_description": format!("<p>Supplier: {supplier}, ref. {supplier_ref}</p>"),
                "weight": format!("{weight:.3}"),
                "dimensions": {
                    "length": format!("{}", rng.random_range(2..400)),
                    "width": format!("{}", rng.random_range(2..200)),
                    "height": format!("{}", rng.random_range(1..120)),
                },
                "manage_stock": true,
                "stock_quantity": rng.random_range(0..500),
                "categories": [{"name": family.category}],
                "attributes": [
                    {"name": "Material", "position": 0, "visible": true, "variation": false, "options": [material]},
                    {"name": "Size", "position": 1, "visible": true, "variation": false, "options": [size]},
                    {"name": "Finish", "position": 2, "visible": true, "variation": false, "options": [finish]},
                ],
                "images": images,
                "meta_data": meta,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_catalogue_and_the_share_is_respected() {
        let a = generate_catalogue(400, 7, 0.4);
        assert_eq!(a, generate_catalogue(400, 7, 0.4));
        assert_ne!(a, generate_catalogue(400, 8, 0.4));
        let missing = a.iter().filter(|p| p["description"] == "").count();
        assert!((120..=200).contains(&missing), "about 40% of 400 lack a description, got {missing}");
        let skus: std::collections::HashSet<_> = a.iter().map(|p| p["sku"].as_str().unwrap().to_owned()).collect();
        assert_eq!(skus.len(), 400);
    }
}
