//! What WordPress does to text on its way in and out: entity normalisation on write (`wp_kses`),
//! `wpautop` on read in the `view` context, `sanitize_title` for slugs, and the price HTML.

use std::sync::LazyLock;

use regex::Regex;

/// Normalises entities like `wp_kses_normalize_entities`: a bare `&` becomes `&amp;`, while valid
/// named (`&ndash;`) and numeric (`&#36;`, `&#x24;`) references are kept.
pub fn normalize_entities(text: &str) -> String {
    static ENTITY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});").unwrap());
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if c == '&' && !ENTITY.is_match(&text[i..]) {
            out.push_str("&amp;");
        } else {
            out.push(c);
        }
    }
    out
}

/// A product or term name as WordPress stores it: entities normalised and angle brackets encoded
/// (titles allow no markup).
pub fn normalize_name(name: &str) -> String {
    normalize_entities(name.trim()).replace('<', "&lt;").replace('>', "&gt;")
}

const BLOCKS: &str = "(?:table|thead|tfoot|caption|col|colgroup|tbody|tr|td|th|div|dl|dd|dt|ul|ol|li|pre|form|map|area|blockquote|address|math|style|p|h[1-6]|hr|fieldset|legend|section|article|aside|hgroup|header|footer|nav|figure|figcaption|details|menu|summary)";

fn re(pattern: &str) -> Regex {
    Regex::new(&pattern.replace("BLOCKS", BLOCKS)).expect("static pattern")
}

/// The main steps of WordPress's `wpautop`, which WooCommerce applies to `description` and
/// `short_description` when serving them in the `view` context: block tags go on their own lines,
/// text runs become `<p>` paragraphs, single newlines inside paragraphs become `<br />`, and the
/// result ends in a newline. Empty input stays empty.
pub fn wpautop(text: &str) -> String {
    static BR_BR: LazyLock<Regex> = LazyLock::new(|| re(r"<br\s*/?>\s*<br\s*/?>"));
    static OPEN: LazyLock<Regex> = LazyLock::new(|| re(r"(<BLOCKS[\s/>])"));
    static CLOSE: LazyLock<Regex> = LazyLock::new(|| re(r"(</BLOCKS>)"));
    static HR: LazyLock<Regex> = LazyLock::new(|| re(r"(<hr\s*?/?>)"));
    static MANY_NL: LazyLock<Regex> = LazyLock::new(|| re(r"\n\n+"));
    static PARAS: LazyLock<Regex> = LazyLock::new(|| re(r"\n\s*\n"));
    static EMPTY_P: LazyLock<Regex> = LazyLock::new(|| re(r"<p>\s*</p>"));
    static P_CLOSE_DIV: LazyLock<Regex> = LazyLock::new(|| re(r"<p>([^<]+)</(div|address|form)>"));
    static P_LONE_BLOCK: LazyLock<Regex> = LazyLock::new(|| re(r"<p>\s*(</?BLOCKS[^>]*>)\s*</p>"));
    static P_LI: LazyLock<Regex> = LazyLock::new(|| re(r"<p>(<li.+?)</p>"));
    static P_BLOCKQUOTE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)<p><blockquote([^>]*)>"));
    static P_BEFORE_BLOCK: LazyLock<Regex> = LazyLock::new(|| re(r"<p>\s*(</?BLOCKS[^>]*>)"));
    static BLOCK_BEFORE_P: LazyLock<Regex> = LazyLock::new(|| re(r"(</?BLOCKS[^>]*>)\s*</p>"));
    static BLOCK_BR: LazyLock<Regex> = LazyLock::new(|| re(r"(</?BLOCKS[^>]*>)\s*<br />"));
    static BR_BLOCK: LazyLock<Regex> =
        LazyLock::new(|| re(r"<br />(\s*</?(?:p|li|div|dl|dd|dt|th|pre|td|ul|ol)[^>]*>)"));

    if text.trim().is_empty() {
        return String::new();
    }
    let mut pee = format!("{text}\n");
    pee = BR_BR.replace_all(&pee, "\n\n").into_owned();
    pee = OPEN.replace_all(&pee, "\n\n$1").into_owned();
    pee = CLOSE.replace_all(&pee, "$1\n\n").into_owned();
    pee = HR.replace_all(&pee, "$1\n\n").into_owned();
    pee = pee.replace("\r\n", "\n").replace('\r', "\n");
    pee = MANY_NL.replace_all(&pee, "\n\n").into_owned();
    let mut wrapped = String::new();
    for part in PARAS.split(&pee).filter(|p| !p.is_empty()) {
        wrapped.push_str("<p>");
        wrapped.push_str(part.trim_matches('\n'));
        wrapped.push_str("</p>\n");
    }
    pee = EMPTY_P.replace_all(&wrapped, "").into_owned();
    pee = P_CLOSE_DIV.replace_all(&pee, "<p>$1</p></$2>").into_owned();
    pee = P_LONE_BLOCK.replace_all(&pee, "$1").into_owned();
    pee = P_LI.replace_all(&pee, "$1").into_owned();
    pee = P_BLOCKQUOTE.replace_all(&pee, "<blockquote$1><p>").into_owned();
    pee = pee.replace("</blockquote></p>", "</p></blockquote>");
    pee = P_BEFORE_BLOCK.replace_all(&pee, "$1").into_owned();
    pee = BLOCK_BEFORE_P.replace_all(&pee, "$1").into_owned();
    pee = newlines_to_br(&pee);
    pee = BLOCK_BR.replace_all(&pee, "$1").into_owned();
    pee = BR_BLOCK.replace_all(&pee, "$1").into_owned();
    if let Some(stripped) = pee.strip_suffix("\n</p>") {
        pee = format!("{stripped}</p>");
    }
    pee
}

/// `(?<!<br />)\s*\n` → `<br />\n` for newlines outside tags; the clean-ups after this step take
/// the `<br />` away again next to block tags.
fn newlines_to_br(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ => {}
        }
        if c == '\n' && !in_tag {
            let kept = out.trim_end().len();
            out.truncate(kept);
            if !out.ends_with("<br />") {
                out.push_str("<br />");
            }
        }
        out.push(c);
    }
    out
}

/// A slug like `sanitize_title`: accents removed, lower case, entities and punctuation dropped,
/// other non-ASCII letters percent-encoded in lower case, runs of spaces and dashes made one dash.
pub fn slugify(title: &str) -> String {
    static ENTITY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"&[A-Za-z0-9#]+;").unwrap());
    let text = ENTITY.replace_all(title, "");
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = unaccent(chars[i]);
        i += 1;
        // Octets already percent-encoded (a slug sent back as it was served) stay as they are.
        if c == '%'
            && chars.get(i).is_some_and(char::is_ascii_hexdigit)
            && chars.get(i + 1).is_some_and(char::is_ascii_hexdigit)
        {
            out.push('%');
            out.push(chars[i].to_ascii_lowercase());
            out.push(chars[i + 1].to_ascii_lowercase());
            i += 2;
            continue;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if c == ' ' || c == '-' || c == '_' || c == '.' || c == '/' {
            out.push('-');
        } else if !c.is_ascii() {
            let mut buf = [0u8; 4];
            for byte in c.to_lowercase().next().unwrap_or(c).encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02x}"));
            }
        }
    }
    let mut slug = String::new();
    for part in out.split('-').filter(|p| !p.is_empty()) {
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(part);
    }
    slug
}

fn unaccent(c: char) -> char {
    const FROM: &str = "àáâãäåçèéêëìíîïñòóôõöøùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝ";
    const TO: &str = "aaaaaaceeeeiiiinoooooouuuuyyAAAAAACEEEEIIIINOOOOOOUUUUY";
    FROM.chars().position(|f| f == c).and_then(|i| TO.chars().nth(i)).unwrap_or(c)
}

/// A price as WooCommerce shows it: two decimals.
pub fn money(price: &str) -> String {
    price.parse::<f64>().map(|p| format!("{p:.2}")).unwrap_or_default()
}

fn amount(price: &str) -> String {
    format!(
        "<span class=\"woocommerce-Price-amount amount\"><bdi><span class=\"woocommerce-Price-currencySymbol\">&#36;</span>{}</bdi></span>",
        money(price)
    )
}

/// `price_html` of a simple product or variation (USD, the fixture store's currency).
pub fn price_html(price: &str, regular: &str, on_sale: bool) -> String {
    if price.is_empty() {
        return String::new();
    }
    if on_sale && !regular.is_empty() {
        return format!(
            "<del aria-hidden=\"true\">{}</del> <span class=\"screen-reader-text\">Original price was: &#036;{}.</span><ins aria-hidden=\"true\">{}</ins><span class=\"screen-reader-text\">Current price is: &#036;{}.</span>",
            amount(regular),
            money(regular),
            amount(price),
            money(price)
        );
    }
    amount(price)
}

/// `price_html` of a variable product: the range of its variations' prices.
pub fn price_range_html(min: &str, max: &str) -> String {
    if min.is_empty() {
        return String::new();
    }
    if money(min) == money(max) {
        return amount(min);
    }
    format!("{} &ndash; {}", amount(min), amount(max))
}

/// `application/x-www-form-urlencoded` like PHP's `urlencode`, as WordPress uses for `Link` URLs.
pub fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wpautop_matches_the_captured_rewrapping() {
        // product_create_simple.json → product_get_single.http
        assert_eq!(
            wpautop(
                "<p>A soft, breathable <strong>100% cotton</strong> t-shirt.</p>\n<ul><li>Machine washable</li><li>Pre-shrunk</li></ul>"
            ),
            "<p>A soft, breathable <strong>100% cotton</strong> t-shirt.</p>\n<ul>\n<li>Machine washable</li>\n<li>Pre-shrunk</li>\n</ul>\n"
        );
        assert_eq!(wpautop("<p>Everyday cotton tee.</p>"), "<p>Everyday cotton tee.</p>\n");
        assert_eq!(wpautop(""), "");
        assert_eq!(
            wpautop("Plain text.\n\nSecond line\nwith a break."),
            "<p>Plain text.</p>\n<p>Second line<br />\nwith a break.</p>\n"
        );
    }

    #[test]
    fn entities_are_normalised_like_kses() {
        assert_eq!(normalize_name("Mug & Coaster Set"), "Mug &amp; Coaster Set");
        assert_eq!(
            normalize_entities("<p>A &ndash; B &amp; C &#36; D & E</p>"),
            "<p>A &ndash; B &amp; C &#36; D &amp; E</p>"
        );
        assert_eq!(normalize_name("M8 <zinc>"), "M8 &lt;zinc&gt;");
    }

    #[test]
    fn slugs_match_the_captured_ones() {
        assert_eq!(slugify("Mug &amp; Coaster Set"), "mug-coaster-set");
        assert_eq!(slugify("Running Socks (3-Pack)"), "running-socks-3-pack");
        assert_eq!(slugify("Café Crème Mug"), "cafe-creme-mug");
        assert_eq!(slugify("日本茶 Green Tea Tin"), "%e6%97%a5%e6%9c%ac%e8%8c%b6-green-tea-tin");
        assert_eq!(slugify("%e6%97%a5%e6%9c%ac%e8%8c%b6-green-tea-tin"), "%e6%97%a5%e6%9c%ac%e8%8c%b6-green-tea-tin");
    }
}
