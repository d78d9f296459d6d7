//! Shamir secret sharing as sops uses it (forked from Vault): GF(2^8) with the AES polynomial,
//! each share = the secret's length of y bytes followed by one x-coordinate byte. The field
//! arithmetic is constant-time (see `gf_mul`).

use subtle::{Choice, ConditionallySelectable};
use zeroize::Zeroizing;

use super::SopsError;

// The arithmetic runs on secret bytes (the data key and the random coefficients), so it must
// not leak them through timing: no table lookups indexed by a secret (Vault's and sops' log/exp
// tables do that) and no branch or loop count that depends on one. Each multiplication is a
// fixed 8-round shift-and-add whose conditional steps are masks chosen by `subtle`, which keeps
// the compiler from turning them back into branches.
fn gf_mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= u8::conditional_select(&0, &a, Choice::from(b & 1));
        let carry = Choice::from(a >> 7);
        a = (a << 1) ^ u8::conditional_select(&0, &0x1b, carry);
        b >>= 1;
    }
    p
}

fn gf_inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8) (and 0 for 0), by a fixed chain of squarings and multiplications:
    // the exponent is a constant, so the sequence of operations is the same for every input.
    let a2 = gf_mul(a, a);
    let a3 = gf_mul(a2, a);
    let a6 = gf_mul(a3, a3);
    let a12 = gf_mul(a6, a6);
    let a15 = gf_mul(a12, a3);
    let a30 = gf_mul(a15, a15);
    let a60 = gf_mul(a30, a30);
    let a120 = gf_mul(a60, a60);
    let a127 = gf_mul(a120, gf_mul(a6, a));
    gf_mul(a127, a127)
}

/// Combines shares (each `y… || x`) into the secret by Lagrange interpolation at 0.
pub fn combine(shares: &[Zeroizing<Vec<u8>>]) -> Result<Zeroizing<Vec<u8>>, SopsError> {
    let bad = |why: &str| SopsError::Metadata(format!("Shamir shares: {why}"));
    let first = shares.first().ok_or_else(|| bad("none"))?;
    if first.len() < 2 || shares.iter().any(|s| s.len() != first.len()) {
        return Err(bad("inconsistent lengths"));
    }
    let len = first.len() - 1;
    let xs: Vec<u8> = shares.iter().map(|s| s[len]).collect();
    for i in 0..xs.len() {
        if xs[..i].contains(&xs[i]) {
            return Err(bad("duplicate share"));
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (i, share) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); subtraction is xor.
        let mut basis = 1u8;
        for (j, &xj) in xs.iter().enumerate() {
            if i != j {
                basis = gf_mul(basis, gf_mul(xj, gf_inv(xj ^ xs[i])));
            }
        }
        for (b, y) in secret.iter_mut().zip(&share[..len]) {
            *b ^= gf_mul(*y, basis);
        }
    }
    Ok(secret)
}

/// Splits `secret` into `n` shares, any `threshold` of which recover it.
pub fn split(
    secret: &[u8],
    n: usize,
    threshold: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, SopsError> {
    if threshold == 0 || threshold > n || n > 255 {
        return Err(SopsError::Metadata(format!(
            "invalid Shamir threshold {threshold} for {n} key groups"
        )));
    }
    // One random polynomial per secret byte: constant term = the byte.
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * (threshold - 1)]);
    aws_lc_rs::rand::fill(&mut coeffs).map_err(|_| SopsError::Random)?;
    let mut shares = Vec::with_capacity(n);
    for x in 1..=n as u8 {
        let mut share = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
        for (i, &s) in secret.iter().enumerate() {
            let mut y = s;
            let mut xp = 1u8;
            for c in &coeffs[i * (threshold - 1)..(i + 1) * (threshold - 1)] {
                xp = gf_mul(xp, x);
                y ^= gf_mul(*c, xp);
            }
            share.push(y);
        }
        share.push(x);
        shares.push(share);
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits with a degree-(t-1) polynomial whose coefficients are fixed bytes.
    fn split(secret: &[u8], xs: &[u8], coeffs: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
        xs.iter()
            .map(|&x| {
                let mut share: Vec<u8> = secret
                    .iter()
                    .map(|&s| {
                        // s + c1*x + c2*x^2 …
                        let mut y = s;
                        let mut xp = 1u8;
                        for &c in coeffs {
                            xp = gf_mul(xp, x);
                            y ^= gf_mul(c, xp);
                        }
                        y
                    })
                    .collect();
                share.push(x);
                Zeroizing::new(share)
            })
            .collect()
    }

    #[test]
    fn random_split_recovers_with_threshold() {
        let secret = [7u8; 32];
        let shares = super::split(&secret, 3, 2).expect("split");
        assert_eq!(&combine(&shares[1..]).expect("combine")[..], &secret);
        assert_eq!(
            &combine(&[shares[0].clone(), shares[2].clone()]).expect("combine")[..],
            &secret
        );
    }

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "{a}");
        }
    }

    /// The schoolbook product in GF(2^8) mod x^8 + x^4 + x^3 + x + 1, computed the obvious way
    /// (carry-less multiply to 15 bits, then reduce), independently of `gf_mul`.
    fn reference_mul(a: u8, b: u8) -> u8 {
        let mut wide = 0u16;
        for i in 0..8 {
            if b >> i & 1 == 1 {
                wide ^= u16::from(a) << i;
            }
        }
        for bit in (8..15).rev() {
            if wide >> bit & 1 == 1 {
                wide ^= 0x11b << (bit - 8);
            }
        }
        wide as u8
    }

    #[test]
    fn constant_time_arithmetic_matches_the_reference_on_every_input() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(gf_mul(a, b), reference_mul(a, b), "{a} * {b}");
            }
            // The inverse by search: the one b with a * b = 1 (and 0 for 0, as a^254 gives).
            let inv = (1..=255u8).find(|&b| reference_mul(a, b) == 1).unwrap_or(0);
            assert_eq!(gf_inv(a), inv, "1 / {a}");
        }
        // Known values: AES's field, as in FIPS-197 (0x57 * 0x83 = 0xc1, 0x53^-1 = 0xca).
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_inv(0x53), 0xca);
    }

    #[test]
    fn any_threshold_subset_recovers() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let shares = split(secret, &[1, 2, 3], &[0x53]);
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let picked = vec![shares[pair[0]].clone(), shares[pair[1]].clone()];
            assert_eq!(&combine(&picked).expect("combine")[..], secret);
        }
        assert_ne!(&combine(&shares[..1]).expect("one")[..], secret);
    }
}
